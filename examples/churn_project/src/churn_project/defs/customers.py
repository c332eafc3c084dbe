"""The team's own upstream asset: one day of customer rows from the CRM (synthetic here, from
ml_platform's demo generator). The churn model reads it (`source: {asset: customer_rows}` in
churn/defs.yaml): each daily partition is one batch, and the UI shows the lineage."""

import dagster as dg
import pandas as pd

from ml_platform.core.simulate import generate_batch

daily = dg.DailyPartitionsDefinition(start_date="2026-11-01")


@dg.asset(partitions_def=daily, group_name="crm", kinds={"pandas"})
def customer_rows(context: dg.AssetExecutionContext) -> pd.DataFrame:
    day = pd.Timestamp(context.partition_key)
    n = (day - pd.Timestamp("2026-11-01")).days
    return generate_batch(1500, seed=100 + n, start_id=1_000_000 + n * 10_000)
