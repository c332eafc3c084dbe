"""The demo model's feature transform: two derived columns the estimator sees, computed from
what callers send (the endpoint runs it on raw request rows)."""

import numpy as np
import pandas as pd


def engineer(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    tenure = pd.to_numeric(out["tenure_months"], errors="coerce")
    charges = pd.to_numeric(out["monthly_charges"], errors="coerce")
    out["charges_per_tenure_month"] = charges / np.maximum(tenure, 1.0)
    out["calls_per_gb"] = pd.to_numeric(out["support_calls"], errors="coerce") / (
        pd.to_numeric(out["usage_gb"], errors="coerce").abs() + 1.0
    )
    return out
