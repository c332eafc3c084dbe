"""`ml-platform up` on a fresh directory: with no click, demo batches are ingested, a champion is
deployed by the sensors and the gate, and the endpoint answers (the README's promise), even
though the first train run's worker is killed with SIGKILL while it fits: the daemon's
run monitoring (or the control-plane sensor) fails the dead run and it is re-launched."""

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
    fired = tmp_path / "fault-fired"
    up = start(
        config,
        "up",
        log=tmp_path / "up.log",
        env={"ML_PLATFORM_FAULT": "train:fitting", "ML_PLATFORM_FAULT_ONCE": str(fired)},
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def served():
            r = httpx.post(f"{base}/models/churn/invocations", json={"dataframe_records": [ROW]}, timeout=5)
            return r.status_code == 200 and r.headers.get("x-model-version")

        version = wait_for(served, 300, interval=1, what="a champion served by the endpoint")
        elapsed = time.time() - t0
        assert int(version) >= 1
        assert fired.exists(), "the fault never fired: no train run reached fitting"
        # The retry deployed the champion; its run may still be finishing its last steps.
        died, retries = wait_for(
            lambda: (lambda d, r: (d, r) if d and r else None)(*_dead_and_retried(config)),
            90,
            interval=2,
            what="the dead train run failed and its retry succeeded",
        )
        # The killed run's MLflow runs are ended by the control-plane sensor, not left RUNNING.
        wait_for(
            lambda: not _running_mlflow_runs_of(config, died),
            60,
            interval=2,
            what="the dead run's MLflow runs marked KILLED",
        )
        assert httpx.get(f"http://127.0.0.1:{ui_port}/server_info", timeout=10).status_code == 200
        doc = json.loads(cli(config, "status", "--json").stdout)
        batches = doc["models"]["churn"]["batches"]
        assert len(batches) == 3 and all(b["status"] == "validated" for b in batches)
        assert doc["models"]["churn"]["champion"]["version"] is not None
        print(f"champion v{version} serving {elapsed:.0f}s after `ml-platform up`")
        assert elapsed < 300
    finally:
        stop(up, sig=signal.SIGTERM, grace=40)
        log = (tmp_path / "up.log").read_text(errors="replace")
    # Only while running: the daemon can log a tick in flight at its own shutdown (a Dagster race).
    running = log.split("[up] stopping")[0]
    assert "Traceback" not in running, running[running.find("Traceback") - 500 :][:4000]
    assert f"[up] churn: champion v{version} published" in log


def _dead_and_retried(config):
    """Failed train runs (the killed worker's), and the runs that re-ran them: Dagster's run
    monitoring + run retries (``dagster/parent_run_id``) or the platform's control-plane sensor
    (``ml_platform/retry_of``), whichever noticed first."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    from ml_platform.control.run_health import TAG_RETRY_OF
    from ml_platform.settings import load_settings

    home = load_settings(config).dagster_home
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as inst:
        runs = inst.get_runs(dg.RunsFilter(job_name="churn_train"))
        died = [r.run_id for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
        retries = [
            r.run_id
            for r in runs
            if r.status == dg.DagsterRunStatus.SUCCESS
            and (r.tags.get(TAG_RETRY_OF) in died or r.tags.get("dagster/parent_run_id") in died)
        ]
    return died, retries


def _running_mlflow_runs_of(config, dagster_run_ids):
    from ml_platform.resources.registry import registry_for
    from ml_platform.settings import load_settings

    running = registry_for(load_settings(config)).running_runs("churn")
    return [m for m, d in running.items() if d in dagster_run_ids]
