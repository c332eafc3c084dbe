"""The statistical and per-slice gate on a real Dagster instance and a real MLflow store, driven
like `ml-platform run`: a first champion trained on an older regime; a candidate better overall but trained on
flipped labels for one payment method is refused by `per_slice`, naming that slice with its
figures (the paired bootstrap alone would have let it through); a clean, clearly better
candidate passes every check and serves."""

import os
import time

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ml_platform.control.champion import champion_version
from ml_platform.control.runner import run_pending
from ml_platform.control.status import status
from ml_platform.core.simulate import generate_batch
from ml_platform.defs.definitions import build_definitions
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import dagster_instance, write_config

CONFIG = """\
training: {windows: [newest], newest_batches: 1}
retrain: {policy: on_arrival}
automation: {settle_seconds: 0}
gate:
  slices:
    - {feature: payment_method, max_regression: 0.1, min_rows: 50}
    - {feature: age, bins: [40, 65], max_regression: 0.15, min_rows: 50}
"""
T0 = time.time() - 10_000


def _batch(rows, seed, day, start_id, poison=None, drift=0.0):
    df = generate_batch(
        rows,
        seed=seed,
        start_id=start_id,
        drift=drift,
        start_time=pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=day),
    )
    if poison:
        # Flip the labels of one slice in the rows it trains on (the holdout = the newest 20% by
        # event_time keeps the true labels): the candidate learns that slice backwards.
        train_part = np.arange(len(df)) < int(len(df) * 0.8)
        hit = train_part & (df["payment_method"] == poison).to_numpy()
        df.loc[hit, "churned"] = 1 - df.loc[hit, "churned"]
    return df


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fair_gate")
    write_config(root, extra=CONFIG)
    settings = load_settings(root / "ml_platform.yaml")
    defs = build_definitions(settings)
    landing = settings.landing_dir("churn")
    with dagster_instance(tmp_path_factory.mktemp("fair_gate_dagster")) as instance:
        outcomes = []
        for i, df in enumerate(
            [
                _batch(1500, 1, 0, 0, drift=1.0),  # a champion of an old regime
                _batch(5000, 2, 1, 10_000, poison="voucher"),  # better overall, not on vouchers
                _batch(5000, 3, 2, 20_000),
            ]
        ):  # clean and clearly better
            p = landing / f"{i}-batch.csv"
            df.to_csv(p, index=False)
            os.utime(p, (T0 + 10 * i, T0 + 10 * i))
            outcomes += run_pending(settings, defs, instance, echo=lambda *_: None)["churn"]
        yield {
            "settings": settings,
            "defs": defs,
            "instance": instance,
            "trained": [o.train for o in outcomes if o.train],
        }


def _gate(t):
    return {c: (passed, reason) for c, passed, reason in t.gate}


def test_better_overall_but_much_worse_on_a_slice_is_refused_naming_it(world):
    first, poisoned, _ = world["trained"]
    assert first.version == 1 and first.deployed, (first.error, _gate(first))
    assert poisoned.version == 2 and not poisoned.deployed, poisoned
    gate = _gate(poisoned)
    for c, (passed, reason) in gate.items():
        print(f"v2 {c}: {'PASS' if passed else 'FAIL'} - {reason}")
    assert set(gate) == {"min_metric", "not_worse_than_champion", "per_slice", "onnx_parity", "latency_budget"}
    ok, reason = gate["not_worse_than_champion"]
    assert ok and "champion v1" in reason and "interval [+" in reason, reason  # better overall, interval > 0
    ok, reason = gate["per_slice"]
    assert not ok, reason
    assert reason.startswith("1 of ") and "payment_method=voucher (" in reason and "vs champion" in reason, reason
    assert "allowed 0.1" in reason, reason


def test_a_clearly_better_candidate_passes_and_serves(world):
    clean = world["trained"][2]
    gate = _gate(clean)
    for c, (passed, reason) in gate.items():
        print(f"v3 {c}: {'PASS' if passed else 'FAIL'} - {reason}")
    assert all(passed for passed, _ in gate.values()), gate
    assert clean.version == 3 and clean.deployed
    assert "all 8 judged slices pass" in gate["per_slice"][1] or "judged slices pass" in gate["per_slice"][1]
    assert champion_version(world["settings"], "churn") == 3


def test_figures_reach_the_ui_mlflow_and_status(world):
    s, defs, inst = world["settings"], world["defs"], world["instance"]
    registry = defs.resources["ml_platform_registry"]
    tags = registry.version("churn", 2).tags
    assert tags["gate.per_slice"] == "failed" and tags["gate.per_slice.failing"] == "payment_method=voucher"
    assert tags["gate.comparison.method"] == "bootstrap" and int(tags["gate.comparison.rows"]) >= 1000
    assert float(tags["gate.comparison.ci_low"]) > 0
    doc = status(s, registry)["models"]["churn"]
    v2 = next(v for v in doc["versions"] if v["version"] == 2)
    assert v2["failing_slices"] == ["payment_method=voucher"]
    c = v2["comparison"]
    assert c["rows"] >= 1000 and c["ci_low"] <= c["delta"] <= c["ci_high"], c
    assert any(r.startswith("per_slice: 1 of") for r in v2["reasons"]), v2["reasons"]
    # The UI: the check's metadata holds the figures and the slice table.
    key = dg.AssetKey(["churn", "candidate_model"])
    records = inst.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(key, "per_slice"), limit=5)
    evals = [r.event.dagster_event.event_specific_data for r in records if r.event and r.event.dagster_event]
    v2_eval = next(e for e in evals if e.metadata["candidate_version"].value == "2")  # text: not plotted
    table = v2_eval.metadata["slices"]
    assert isinstance(table, dg.TableMetadataValue)
    rows = {r.data["slice"]: r.data for r in table.records}
    assert rows["payment_method=voucher"]["verdict"] == "FAIL" and rows["payment_method=card"]["verdict"] == "pass"
    assert {"age < 40", "age in [40, 65)", "age >= 65"} <= set(rows)
    nw = inst.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(key, "not_worse_than_champion"), limit=5
    )
    meta = next(
        r.event.dagster_event.event_specific_data.metadata
        for r in nw
        if r.event and r.event.dagster_event.event_specific_data.metadata["candidate_version"].value == "2"
    )
    assert {"delta", "ci_low", "ci_high", "rows"} <= set(meta), sorted(meta)
