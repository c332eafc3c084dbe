"""`ml-platform status` read straight from MLflow's SQLite store says what the MLflow client says,
and notices a divergence that needs the client's repair."""

import json
import subprocess
import sys

from mlflow import MlflowClient

from ml_platform.control.reconcile import reconcile_needed
from ml_platform.control.status import fast_status, status, to_json
from ml_platform.core import catalog
from ml_platform.names import gate_checks, gate_tag
from ml_platform.resources.endpoint import endpoint_for
from ml_platform.resources.registry import registry_for
from ml_platform.resources.registry_view import view_for
from ml_platform.runtime.instance import prepare_environment


def test_the_sqlite_view_reads_what_the_client_reads(settings, config_dir):
    prepare_environment(settings)
    for i in range(3):
        catalog.update_record(
            settings.model_dir("churn"), f"b{i}", file=f"b{i}.csv", arrival=1000.0 + i, rows=10, status="validated"
        )
    reg = registry_for(settings)
    exp = reg.experiment_id("churn")
    # registry_uri too: the platform's runs set MLflow's process-wide registry URI
    # (resources/registry.py), which a client given only a tracking URI would use instead: in the full
    # suite this test's versions went to an earlier test's store and both views listed none.
    client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    if not client.search_registered_models("name = 'churn'"):  # the registry may create it with the experiment
        client.create_registered_model("churn")
    for v in range(3):
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "holdout_roc_auc", 0.7 + v / 10)
        client.set_terminated(run.info.run_id)
        client.create_model_version("churn", f"{run.info.artifact_uri}/model", run.info.run_id)
        for c in gate_checks(settings.models["churn"]):
            client.set_model_version_tag("churn", str(v + 1), gate_tag(c), "passed" if v else "failed")

    view = view_for(settings)
    assert view is not None and not reconcile_needed(settings, view, "churn")
    fast = fast_status(settings)
    slow = status(settings, reg, endpoint_for(settings))
    assert json.loads(to_json(fast)) == json.loads(to_json(slow))
    assert [v["gate_state"] for v in fast["models"]["churn"]["versions"]] == ["failed", "passed", "passed"]

    # The CLI answers without importing MLflow or Dagster.
    code = (
        "import sys; from ml_platform.cli.main import main; sys.argv=['ml-platform','status','--json','--config',"
        f"{str(config_dir / 'ml_platform.yaml')!r}]; rc = main(); "
        "assert 'mlflow' not in sys.modules and 'dagster' not in sys.modules, 'imported'; sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]

    # An alias no pointer backs: only the client can repair it, so the fast path calls it.
    client.set_registered_model_alias("churn", "champion", "2")
    assert reconcile_needed(settings, view, "churn")


def test_a_stage_is_due_when_its_max_hours_passed_without_evidence(settings):
    """`status` says a stage is due whenever the staging sensor or `run` would judge it (here:
    max_hours passed with no traffic), not only once min_requests are in."""
    from datetime import UTC, datetime, timedelta

    from ml_platform.control.status import _staging
    from ml_platform.serving.store import STAGED

    d = settings.serving_dir / "churn"
    d.mkdir(parents=True, exist_ok=True)

    def stage(hours_ago: float) -> dict:
        started = (datetime.now(UTC) - timedelta(hours=hours_ago)).isoformat()
        rec = {"version": 2, "mode": "shadow", "champion": None, "min_requests": 500, "max_hours": 24}
        (d / STAGED).write_text(json.dumps({**rec, "started_at": started}))
        return _staging(settings, "churn")

    assert stage(1)["due"] is False
    assert stage(30)["due"] is True
