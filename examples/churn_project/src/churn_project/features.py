"""The team's own feature engineering: raw request/batch columns -> what the estimator sees.

ml_platform runs this same function in training, batch scoring, drift on model inputs and the
endpoint (on the raw rows callers send), so training and serving cannot skew."""

import numpy as np
import pandas as pd


def engineer(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    tenure = pd.to_numeric(out["tenure_months"], errors="coerce")
    charges = pd.to_numeric(out["monthly_charges"], errors="coerce")
    out["charges_per_month_of_tenure"] = charges / np.maximum(tenure, 1.0)
    out["calls_per_gb"] = pd.to_numeric(out["support_calls"], errors="coerce") / (
        pd.to_numeric(out["usage_gb"], errors="coerce").abs() + 1.0
    )
    return out
