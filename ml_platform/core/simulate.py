"""Synthetic customer-churn batches for the demo model (`ml-platform simulate`).

Numeric and categorical features (one with integer codes), an id, a timestamp and a
binary label from a logistic model with interactions. ``drift`` in [0, 1] shifts the
feature distributions *and* the label relationship, so a model trained before the
drift really gets worse after it (what the self-healing loop must notice and fix).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

PLANS = ["basic", "standard", "premium"]
CONTRACTS = ["monthly", "annual", "two_year"]
PAYMENTS = ["card", "bank_transfer", "paypal", "voucher"]


def generate_batch(
    rows: int, *, seed: int = 0, drift: float = 0.0, start_id: int = 0, start_time: pd.Timestamp | None = None
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    d = float(drift)
    tenure = np.clip(rng.gamma(2.0 - 0.8 * d, 14.0, rows), 0, 120).round()
    charges = np.clip(rng.normal(65 + 25 * d, 20, rows), 10, 200).round(2)
    calls = rng.poisson(1.2 + 2.5 * d, rows).astype(float)
    usage = np.clip(rng.lognormal(3.0 - 0.5 * d, 0.6, rows), 0, None).round(1)
    age = np.clip(rng.normal(45 - 8 * d, 13, rows), 18, 95).round()
    plan = rng.choice(PLANS, rows, p=[0.5 - 0.25 * d, 0.3, 0.2 + 0.25 * d])
    contract = rng.choice(CONTRACTS, rows, p=[0.5 + 0.3 * d, 0.3 - 0.15 * d, 0.2 - 0.15 * d])
    region = rng.integers(1, 6, rows)  # integer codes
    payment = rng.choice(PAYMENTS, rows, p=[0.4, 0.3, 0.2, 0.1])

    # The label relationship moves with drift too: price sensitivity and support
    # frustration swap roles, so yesterday's model mis-ranks today's customers.
    logit = (
        -1.0
        + 0.9 * d
        - 0.045 * tenure
        + (0.025 - 0.05 * d) * (charges - 65)
        + (0.45 - 0.7 * d) * calls
        - 0.012 * usage
        + np.where(contract == "monthly", 1.2, np.where(contract == "annual", 0.0, -1.0))
        + np.where(plan == "premium", 0.5 * (1 - 2 * d), 0.0)
        + np.where(region == 3, 0.6, 0.0)
        + np.where(region == 5, -0.4 + 1.4 * d, 0.0)
        + d * 0.05 * (age - 45)
    )
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)

    # Realistic imperfections: a few missing usage readings and payment methods.
    usage[rng.random(rows) < 0.02] = np.nan
    payment = payment.astype(object)
    payment[rng.random(rows) < 0.01] = None

    start = start_time if start_time is not None else pd.Timestamp("2026-01-01", tz="UTC")
    ts = start + pd.to_timedelta(np.sort(rng.uniform(0, 86_400, rows)), unit="s")
    return pd.DataFrame(
        {
            "customer_id": np.arange(start_id, start_id + rows),
            "event_time": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tenure_months": tenure,
            "monthly_charges": charges,
            "support_calls": calls,
            "usage_gb": usage,
            "age": age,
            "plan": plan,
            "contract": contract,
            "region": region,
            "payment_method": payment,
            "churned": churned,
        }
    )


def write_batches(
    landing_dir: Path,
    batches: int,
    *,
    rows: int = 2000,
    drift: float = 0.0,
    seed: int = 0,
    fmt: str = "csv",
    prefix: str = "batch",
    drift_from: int = 0,
) -> list[Path]:
    """Write ``batches`` files atomically (tmp name, then rename) so a watching sensor
    never sees half a file. Batches ``drift_from`` and later get ``drift``."""
    landing_dir.mkdir(parents=True, exist_ok=True)
    existing = len(list(landing_dir.glob(f"{prefix}-*")))
    paths = []
    for i in range(batches):
        n = existing + i
        df = generate_batch(
            rows,
            seed=seed * 100_003 + n,
            drift=drift if i >= drift_from else 0.0,
            start_id=n * rows * 10 + seed * 10**9,
            start_time=pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=n),
        )
        final = landing_dir / f"{prefix}-{n:04d}.{fmt}"
        tmp = landing_dir / f".{final.name}.tmp"
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, final)
        paths.append(final)
    return paths
