"""`ml-platform up` on a fresh directory: with no click, demo batches are ingested, a champion is
deployed by the sensors and the gate, and the endpoint answers (the README's promise)."""

import json
import signal
import time

import httpx
import pytest

from ml_platform_tests.conftest import free_port, write_config
from ml_platform_tests.e2e.helpers import ROW, cli, start, stop, wait_for

pytestmark = pytest.mark.e2e


def test_up_deploys_a_champion_without_a_click(tmp_path):
    port, ui_port = free_port(), free_port()
    config = write_config(tmp_path, port=port, ui_port=ui_port)
    t0 = time.time()
    up = start(config, "up", log=tmp_path / "up.log")
    try:
        base = f"http://127.0.0.1:{port}"

        def served():
            r = httpx.post(f"{base}/models/churn/invocations", json={"dataframe_records": [ROW]}, timeout=5)
            return r.status_code == 200 and r.headers.get("x-model-version")

        version = wait_for(served, 150, interval=1, what="a champion served by the endpoint")
        elapsed = time.time() - t0
        assert int(version) >= 1
        assert httpx.get(f"http://127.0.0.1:{ui_port}/server_info", timeout=10).status_code == 200
        doc = json.loads(cli(config, "status", "--json").stdout)
        batches = doc["models"]["churn"]["batches"]
        assert len(batches) == 3 and all(b["status"] == "validated" for b in batches)
        assert doc["models"]["churn"]["champion"]["version"] is not None
        print(f"champion v{version} serving {elapsed:.0f}s after `ml-platform up`")
        assert elapsed < 150
    finally:
        stop(up, sig=signal.SIGTERM, grace=40)
        log = (tmp_path / "up.log").read_text(errors="replace")
    assert "Traceback" not in log.split("[up] a child process exited")[0] or "KeyboardInterrupt" in log
    assert f"[up] churn: champion v{version} published" in log
