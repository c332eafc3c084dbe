"""A feature transform: derived columns the estimator sees, computed from what callers send."""

import numpy as np
import pandas as pd


def engineer(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    tenure = pd.to_numeric(out["tenure_months"], errors="coerce")
    out["charges_per_tenure_month"] = pd.to_numeric(out["monthly_charges"], errors="coerce") / np.maximum(tenure, 1.0)
    out["long_contract"] = out["contract"].astype(str).isin(["annual", "two_year"])
    return out


def explode_on_old_customers(df: pd.DataFrame) -> pd.DataFrame:
    if (pd.to_numeric(df["age"], errors="coerce") > 125).any():
        raise ValueError("age over 125")
    return df
