"""A team's own `dg` project uses the platform as a Component (examples/churn_project, copied to a
temp dir): `dg` lists and scaffolds it, the project's own assets and automation coexist with the
model's chain, its own estimator class and gate check run, `ml-platform` works in the project,
a code change alone retrains (trigger `code`) and `ml-platform check` refuses a worse change."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from ml_platform_tests.conftest import free_port
from ml_platform_tests.e2e import warm
from ml_platform_tests.e2e.helpers import stop, wait_for

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "churn_project"
DG = Path(sys.executable).with_name("dg")


def _mlp(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return warm.run(["--project", project, *args], cwd=project, timeout=timeout)


def _ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    return r.stdout


def _edit_component(project: Path, **changes) -> None:
    f = project / "src" / "churn_project" / "defs" / "churn" / "defs.yaml"
    doc = yaml.safe_load(f.read_text())
    doc["attributes"].update(changes)
    f.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dg") / "churn_project"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".ml_platform", "data", "__pycache__", ".env"))
    (root / "ml_platform.yaml").write_text(
        f"storage_dir: .ml_platform\nserving: {{host: 127.0.0.1, port: {free_port()}, poll_seconds: 0.5}}\n"
        f"ui: {{host: 127.0.0.1, port: {free_port()}}}\n"
    )
    return root


def test_dg_lists_and_scaffolds_the_component(project):
    if not DG.exists():
        pytest.skip(f"dg is not installed next to {sys.executable} (the test extra installs dagster-dg-cli)")
    listed = _ok(subprocess.run([str(DG), "list", "components"], capture_output=True, text=True, cwd=project))
    assert "ml_platform.ModelComponent" in listed, listed
    _ok(
        subprocess.run(
            [str(DG), "scaffold", "defs", "ml_platform.ModelComponent", "scratch"],
            capture_output=True,
            text=True,
            cwd=project,
        )
    )
    scaffolded = project / "src" / "churn_project" / "defs" / "scratch" / "defs.yaml"
    doc = yaml.safe_load(scaffolded.read_text())
    assert doc["type"] == "ml_platform.ModelComponent", doc
    assert {"name", "target", "task", "features"} <= set(doc["attributes"]), doc
    status = json.loads(_ok(_mlp(project, "status", "--json")))
    assert set(status["models"]) == {"churn", "scratch"}, status["models"].keys()
    shutil.rmtree(scaffolded.parent)


def test_the_projects_definitions_hold_its_own_assets_and_the_models_chain(project):
    code = (
        "from churn_project.definitions import defs\n"
        "import dagster as dg, json\n"
        "d = defs()\n"
        "d.get_repository_def().validate_loadable if hasattr(d, 'get_repository_def') else None\n"
        "repo = d.get_repository_def()\n"
        "print(json.dumps({'assets': sorted(k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()),"
        " 'resources': sorted(d.resources), 'sensors': sorted(s.name for s in repo.sensor_defs),"
        " 'checks': sorted(k.name for k in repo.asset_graph.asset_check_keys),"
        " 'raw_parents': sorted(k.to_user_string() for k in"
        "   repo.asset_graph.get(dg.AssetKey(['churn', 'raw_batch'])).parent_keys)}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=project / "src")
    out = json.loads(_ok(r).strip().splitlines()[-1])
    assert "weekly_report" in out["assets"] and "churn/deployed_model" in out["assets"], out["assets"]
    assert out["resources"] == [
        "ml_platform_endpoint",
        "ml_platform_io_manager",
        "ml_platform_mlflow",
        "ml_platform_registry",
    ], out
    assert {"team_automation", "churn_automation"} <= set(out["sensors"]), out["sensors"]
    assert "no_worse_for_new_customers" in out["checks"], out["checks"]
    assert out["raw_parents"] == ["customer_rows"], "the team's asset is upstream of the model's batches"


def test_run_serve_a_code_change_and_check(project):
    # the team's own upstream asset lands two daily partitions: two batches
    materialize = (
        "import dagster as dg, sys\n"
        "from churn_project.defs.customers import customer_rows\n"
        "from ml_platform.runtime.instance import get_instance\n"
        "from ml_platform.settings import load_settings\n"
        "inst = get_instance(load_settings(sys.argv[1]))\n"
        "for day in ('2026-11-01', '2026-11-02'):\n"
        "    assert dg.materialize([customer_rows], partition_key=day, instance=inst).success\n"
    )
    _ok(
        subprocess.run(
            [sys.executable, "-c", materialize, str(project)], capture_output=True, text=True, cwd=project / "src"
        )
    )
    out = _ok(_mlp(project, "run"))
    assert "2 new batch(es) of asset customer_rows" in out, out
    assert "deployed v1 as champion" in out, out
    assert "gate no_worse_for_new_customers: PASS" in out, out

    # the endpoint serves it (raw request rows)
    settings_port = yaml.safe_load((project / "ml_platform.yaml").read_text())["serving"]["port"]
    log = open(project / "serve.log", "wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "ml_platform", "--project", str(project), "serve"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=project,
    )
    try:
        url = f"http://127.0.0.1:{settings_port}"
        wait_for(lambda: httpx.get(f"{url}/v2/health/ready").json().get("ready"), 90, what="endpoint ready")
        row = {
            "customer_id": 1,
            "tenure_months": 3,
            "monthly_charges": 80.0,
            "support_calls": 4,
            "usage_gb": 2.5,
            "age": 30,
            "plan": "basic",
            "contract": "monthly",
            "region": 2,
            "payment_method": "card",
        }
        r = httpx.post(f"{url}/models/churn/invocations", json={"dataframe_records": [row]})
        assert r.status_code == 200 and r.headers["X-Model-Version"] == "1", r.text
    finally:
        stop(serve)

    # a transform change alone retrains, with trigger `code` and a reason naming what changed
    features = project / "src" / "churn_project" / "features.py"
    features.write_text(
        features.read_text().replace("    return out\n", "    out['is_new'] = tenure < 12\n    return out\n")
    )
    out = _ok(_mlp(project, "run"))
    assert "retrain (code)" in out and "transform" in out, out
    versions = json.loads(_ok(_mlp(project, "status", "--json")))["models"]["churn"]["versions"]
    assert versions[-1]["trigger"] == "code" and versions[-1]["gate_state"] != "pending", versions[-1]
    again = _ok(_mlp(project, "run"))
    assert "retrain (code)" not in again, "the same code must not retrain twice"

    # CI: a worse change is refused by the gate, and nothing deploys
    champion = json.loads(_ok(_mlp(project, "status", "--json")))["models"]["churn"]["champion"]["version"]
    _edit_component(
        project,
        estimator={"class": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 1}},
    )
    r = _mlp(project, "check")
    assert r.returncode == 1, f"exit {r.returncode}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
    assert "would REFUSE" in r.stdout, r.stdout
    after = json.loads(_ok(_mlp(project, "status", "--json")))["models"]["churn"]
    assert after["champion"]["version"] == champion, after["champion"]
    checked = after["versions"][-1]
    assert checked["trigger"] == "check" and not checked["promoted"], checked
    r = _mlp(project, "rollback", "--to-version", str(checked["version"]))
    assert r.returncode != 0 and "ml-platform check" in r.stderr, r.stderr
