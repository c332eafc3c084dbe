"""An endpoint that requires the admin token still gets deploys and rollbacks, and the token
never lands in the Dagster instance (run config, snapshots, event log) or the CLI's output."""

import json

import httpx
import pytest

from ml_platform.core import audit
from ml_platform.core.simulate import write_batches
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import free_port, write_config
from ml_platform_tests.e2e.helpers import ROW, cli, start, stop, wait_for

pytestmark = pytest.mark.e2e
TOKEN = "tok-" + "9f3c1a77e2b54d0c8a6e" * 2


def test_deploy_and_rollback_send_the_token_and_never_leak_it(tmp_path):
    port = free_port()
    config = write_config(tmp_path, port=port, extra="retrain: {policy: on_arrival}\nautomation: {settle_seconds: 0}\n")
    config.write_text(config.read_text().replace("poll_seconds: 0.5}", f"poll_seconds: 30, admin_token: {TOKEN}}}"))
    s = load_settings(config)
    write_batches(s.landing_dir("churn"), 2, rows=1200, seed=5)
    server = start(config, "serve", log=tmp_path / "serve.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{base}/v2/health/live").status_code == 200, 60, what="endpoint up")
        assert httpx.post(f"{base}/admin/reload").status_code == 401  # the token is required
        run = cli(config, "run")
        assert run.returncode == 0, run.stderr[-3000:]
        moves = audit.read(s.model_dir("churn"))
        # Without the token the endpoint answers 401 and the deploy is rolled back; with it,
        # the endpoint reloads at once (its poll is 30 s away) and the smoke request passes.
        assert [(m.previous, m.to, m.endpoint) for m in moves] == [(None, 1, "reloaded"), (1, 2, "reloaded")], [
            m.to_dict() for m in moves
        ]
        r = httpx.post(f"{base}/models/churn/invocations", json={"dataframe_records": [ROW]})
        assert r.headers["x-model-version"] == "2"
        rb = cli(config, "rollback", "--model", "churn")
        assert rb.returncode == 0 and "endpoint: reloaded" in rb.stdout, rb.stdout + rb.stderr
        assert (
            httpx.post(f"{base}/models/churn/invocations", json={"dataframe_records": [ROW]}).headers["x-model-version"]
            == "1"
        )
        outputs = run.stdout + run.stderr + rb.stdout + rb.stderr + cli(config, "status", "--json").stdout
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
