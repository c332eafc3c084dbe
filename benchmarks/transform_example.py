"""The feature transform `serving_transform.py` serves: two derived columns, as a team would write."""

import numpy as np
import pandas as pd


def derive(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["income_per_year_of_age"] = pd.to_numeric(out["income"], errors="coerce") / np.maximum(
        pd.to_numeric(out["age"], errors="coerce"), 1.0
    )
    out["premium"] = out["plan"].astype(str).isin(["gold", "pro"])
    return out
