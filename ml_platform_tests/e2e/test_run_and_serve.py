"""`ml-platform simulate` + `run` + `serve` as a user would run them, then a worse candidate."""

import json

import httpx
import numpy as np
import pandas as pd
import pytest

from ml_platform_tests.conftest import free_port, write_config
from ml_platform_tests.e2e.helpers import ROW, cli, start, stop, wait_for

pytestmark = pytest.mark.e2e


def test_run_serve_and_a_blocked_worse_candidate(tmp_path):
    port = free_port()
    config = write_config(tmp_path, port=port, extra="retrain: {policy: on_arrival}\n")
    assert cli(config, "simulate", "--batches", "2", "--rows", "1500").returncode == 0
    run = cli(config, "run")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "deployed v1 as champion" in run.stdout and "serving version: 2" in run.stdout
    assert "gate min_metric: PASS" in run.stdout

    src = sorted((tmp_path / "landing").glob("*.csv"))[0]
    scored = cli(config, "score", "--model", "churn", str(src), "--out", str(tmp_path / "scored.parquet"))
    assert scored.returncode == 0 and "scored 1500 rows with v2" in scored.stdout, scored.stderr
    out = pd.read_parquet(tmp_path / "scored.parquet")
    assert len(out) == 1500 and {"customer_id", "label", "p_0", "p_1", "model_version"} <= set(out.columns)
    missing = cli(config, "score", "--model", "churn", str(tmp_path / "nope.csv"))
    assert missing.returncode == 1 and "nope.csv" in missing.stderr

    server = start(config, "serve", log=tmp_path / "serve.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{base}/v2/health/ready").status_code == 200, 60, what="endpoint ready")
        r = httpx.post(
            f"{base}/models/churn/invocations", json={"dataframe_records": [ROW, {**ROW, "tenure_months": 60}]}
        )
        assert r.status_code == 200 and r.headers["x-model-version"] == "2"
        preds = r.json()["predictions"]
        assert len(preds) == 2 and set(preds[0]["probabilities"]) == {"0", "1"}
        assert preds[0]["label"] in (0, 1) and abs(sum(preds[0]["probabilities"].values()) - 1) < 1e-5
        bad = httpx.post(f"{base}/models/churn/invocations", json={"dataframe_records": [{"tenure_months": 1}]})
        assert bad.status_code == 400 and "monthly_charges" in json.dumps(bad.json())

        # A much worse candidate: shuffled labels, trained alone (window of one batch).
        cfg_text = config.read_text().replace(
            "    features:\n", "    training: {window_batches: 1}\n    features:\n", 1
        )
        config.write_text(cfg_text)
        df = pd.read_csv(sorted((tmp_path / "landing").glob("*.csv"))[0])
        df["churned"] = np.random.default_rng(1).permutation(df["churned"].to_numpy())
        df["customer_id"] += 10**6
        df.to_csv(tmp_path / "landing" / "shuffled.csv", index=False)
        run2 = cli(config, "run")
        assert run2.returncode == 0, run2.stderr[-3000:]
        assert "gate min_metric: FAIL" in run2.stdout and "not deployed" in run2.stdout
        assert "serving version: 2" in run2.stdout
        r = httpx.post(f"{base}/models/churn/invocations", json={"dataframe_records": [ROW]})
        assert r.status_code == 200 and r.headers["x-model-version"] == "2"

        doc = json.loads(cli(config, "status", "--json").stdout)
        versions = doc["models"]["churn"]["versions"]
        assert [v["gate_passed"] for v in versions] == [True, True, False]
        assert doc["models"]["churn"]["champion"]["version"] == 2
        assert all(b["status"] == "validated" for b in doc["models"]["churn"]["batches"])

        # Rolling back swaps the live model.
        rb = cli(config, "rollback", "--model", "churn")
        assert rb.returncode == 0, rb.stderr
        r = httpx.post(f"{base}/models/churn/invocations", json={"dataframe_records": [ROW]})
        assert r.headers["x-model-version"] == "1"
    finally:
        stop(server)
