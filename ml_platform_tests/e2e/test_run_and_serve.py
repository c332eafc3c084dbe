"""`ml-platform simulate` + `serve` + `run` as a user would run them: the endpoint requires the
admin token, deploys and rollbacks reload it with the token (its own poll is 30 s away), a worse
candidate is blocked, and the token never lands in the Dagster instance (run config, snapshots,
event log), the endpoint's log or the CLI's output."""

import json

import httpx
import numpy as np
import pandas as pd
import pytest

from ml_platform.core import audit
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import free_port, write_config
from ml_platform_tests.e2e.helpers import ROW, cli, start, stop, wait_for

pytestmark = pytest.mark.e2e
TOKEN = "tok-" + "9f3c1a77e2b54d0c8a6e" * 2


def test_run_serve_a_blocked_worse_candidate_and_the_token_never_leaks(tmp_path):
    port = free_port()
    config = write_config(tmp_path, port=port, extra="retrain: {policy: on_arrival}\nautomation: {settle_seconds: 0}\n")
    config.write_text(config.read_text().replace("poll_seconds: 0.5}", f"poll_seconds: 30, admin_token: {TOKEN}}}"))
    s = load_settings(config)
    assert cli(config, "simulate", "--batches", "2", "--rows", "1500").returncode == 0
    server = start(config, "serve", log=tmp_path / "serve.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{base}/v2/health/live").status_code == 200, 60, what="endpoint up")
        assert httpx.post(f"{base}/admin/reload").status_code == 401  # the token is required
        run = cli(config, "run")
        assert run.returncode == 0, run.stderr[-3000:]
        # MLflow's INFO lines and download progress bars stay off the terminal (cli/main.QUIET_MLFLOW)
        assert "INFO mlflow" not in run.stderr and "Downloading artifacts" not in run.stderr, run.stderr[-3000:]
        assert "deployed v1 as champion" in run.stdout and "serving version: 2" in run.stdout
        assert "gate min_metric: PASS" in run.stdout
        # Without the token the endpoint answers 401 and the deploy is rolled back; with it,
        # the endpoint reloads at once and the smoke request passes.
        moves = audit.read(s.model_dir("churn"))
        assert [(m.previous, m.to, m.endpoint) for m in moves] == [(None, 1, "reloaded"), (1, 2, "reloaded")], [
            m.to_dict() for m in moves
        ]

        src = sorted((tmp_path / "landing").glob("*.csv"))[0]
        scored = cli(config, "score", "--model", "churn", str(src), "--out", str(tmp_path / "scored.parquet"))
        assert scored.returncode == 0 and "scored 1500 rows with v2" in scored.stdout, scored.stderr
        out = pd.read_parquet(tmp_path / "scored.parquet")
        assert len(out) == 1500 and {"customer_id", "label", "p_0", "p_1", "model_version"} <= set(out.columns)
        missing = cli(config, "score", "--model", "churn", str(tmp_path / "nope.csv"))
        assert missing.returncode == 1 and "nope.csv" in missing.stderr

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
        df = pd.read_csv(src)
        df["churned"] = np.random.default_rng(1).permutation(df["churned"].to_numpy())
        df["customer_id"] += 10**6
        df.to_csv(tmp_path / "landing" / "shuffled.csv", index=False)
        run2 = cli(config, "run")
        assert run2.returncode == 0, run2.stderr[-3000:]
        assert "gate min_metric: FAIL" in run2.stdout and "not deployed" in run2.stdout
        assert "DagsterAssetCheckFailedError" not in run2.stderr and "Stack Trace" not in run2.stderr, run2.stderr
        assert "serving version: 2" in run2.stdout
        r = httpx.post(f"{base}/models/churn/invocations", json={"dataframe_records": [ROW]})
        assert r.status_code == 200 and r.headers["x-model-version"] == "2"

        status = cli(config, "status", "--json").stdout
        doc = json.loads(status)
        versions = doc["models"]["churn"]["versions"]
        assert [v["gate_passed"] for v in versions] == [True, True, False]
        assert doc["models"]["churn"]["champion"]["version"] == 2
        assert all(b["status"] == "validated" for b in doc["models"]["churn"]["batches"])

        # Rolling back reloads the live model (with the token).
        rb = cli(config, "rollback", "--model", "churn")
        assert rb.returncode == 0 and "endpoint: reloaded" in rb.stdout, rb.stdout + rb.stderr
        r = httpx.post(f"{base}/models/churn/invocations", json={"dataframe_records": [ROW]})
        assert r.headers["x-model-version"] == "1"
        outputs = run.stdout + run.stderr + run2.stdout + run2.stderr + rb.stdout + rb.stderr + status
        assert TOKEN not in outputs
    finally:
        stop(server)
    assert TOKEN not in (tmp_path / "serve.log").read_text(errors="replace")
    leaks = [p for p in s.dagster_home.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert not leaks, f"admin token found in {leaks}"
    assert json.dumps(s.model_dump()).count(TOKEN) == 1  # it is in the config, and only there
    # The repository snapshot the code server sends the webserver (resource values included).
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._serdes import serialize_value

    from ml_platform.defs.definitions import build_definitions

    snap = serialize_value(RepositorySnap.from_def(build_definitions(s).get_repository_def()))
    assert "config_path" in snap and TOKEN not in snap
