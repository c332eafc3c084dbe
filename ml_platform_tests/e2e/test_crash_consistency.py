"""kill -9 at several moments of training and deploying; the next command repairs the state.

Each case runs the real `ml-platform` CLI in a subprocess with ``ML_PLATFORM_FAULT=<point>``,
which makes the process SIGKILL itself at that point (no cleanup runs), then checks what
the next `ml-platform run` / `status` leaves: store pointer, MLflow alias, promoted tags and
the audit log name the same champion, with one audit entry per move, and a retrain whose
worker died is run again.
"""

import json
import os
import signal

import pytest

from ml_platform.control.champion import champion_version
from ml_platform.core import audit
from ml_platform.core.simulate import write_batches
from ml_platform.resources.registry import registry_for
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import free_port, write_config
from ml_platform_tests.e2e.helpers import cli

pytestmark = pytest.mark.e2e


def run_cli(config, *args, fault=None, timeout=300):
    env = dict(os.environ)
    env.pop("ML_PLATFORM_FAULT", None)
    if fault:
        env["ML_PLATFORM_FAULT"] = fault
    return cli(config, *args, timeout=timeout, env=env)


def world(tmp_path, batches=1):
    config = write_config(
        tmp_path, port=free_port(), extra="retrain: {policy: on_arrival}\nautomation: {settle_seconds: 0}\n"
    )
    s = load_settings(config)
    write_batches(s.landing_dir("churn"), batches, rows=1200, seed=3)
    return config, s


def consistent(s) -> tuple[int | None, list]:
    """The champion every place of the state names, asserting they agree."""
    reg = registry_for(s)
    pointer = champion_version(s, "churn")
    assert reg.champion_alias("churn") == pointer, f"alias {reg.champion_alias('churn')} != pointer {pointer}"
    moves = audit.read(s.model_dir("churn"))
    assert audit.read_intent(s.model_dir("churn")) is None, "an intent was left unfinished"
    if pointer is not None:
        assert moves and moves[-1].to == pointer, [m.to_dict() for m in moves]
        assert reg.version("churn", pointer).tags.get("promoted") == "true"
    assert len({m.intent for m in moves}) == len(moves), "one audit entry per move"
    return pointer, moves


@pytest.mark.parametrize("fault", ["deploy:published", "deploy:audited"])
def test_killed_while_deploying_the_next_run_finishes_the_move(tmp_path, fault):
    config, s = world(tmp_path)
    dead = run_cli(config, "run", fault=fault)
    assert dead.returncode == -signal.SIGKILL, dead.stdout[-2000:] + dead.stderr[-2000:]
    again = run_cli(config, "run")
    assert again.returncode == 0, again.stderr[-3000:]
    pointer, moves = consistent(s)
    assert pointer == 1, again.stdout
    assert [(m.previous, m.to) for m in moves] == [(None, 1)]
    if fault != "deploy:audited":
        assert "repaired: finished the interrupted move" in again.stdout, again.stdout
    # The dead train run is not left STARTED: it was marked failed, not blocking the next retrain.
    assert "marked failed" in again.stdout, again.stdout


def test_killed_between_pointer_and_alias_the_split_truth_is_repaired_by_status(tmp_path):
    config, s = world(tmp_path)
    assert run_cli(config, "run", fault="deploy:pointed").returncode == -signal.SIGKILL
    # As the issue saw it: the store serves v1 while MLflow has no champion alias.
    assert champion_version(s, "churn") == 1 and registry_for(s).champion_alias("churn") is None
    doc = json.loads(run_cli(config, "status", "--json").stdout)
    m = doc["models"]["churn"]
    assert m["champion"]["version"] == 1
    assert any("finished the interrupted move" in r for r in m["repairs"]), m["repairs"]
    pointer, moves = consistent(s)
    assert pointer == 1 and [(m.previous, m.to) for m in moves] == [(None, 1)]
    # Nothing left to repair the second time; the next run only fails the dead train run.
    assert json.loads(run_cli(config, "status", "--json").stdout)["models"]["churn"]["repairs"] == []
    again = run_cli(config, "run")
    assert again.returncode == 0 and "marked failed" in again.stdout, again.stdout + again.stderr[-3000:]
    assert consistent(s)[0] == 1


def test_killed_while_training_the_retrain_is_run_again(tmp_path):
    config, s = world(tmp_path)
    dead = run_cli(config, "run", fault="train:fitting")
    assert dead.returncode == -signal.SIGKILL
    assert champion_version(s, "churn") is None
    again = run_cli(config, "run")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "marked failed" in again.stdout and "re-running churn_train" in again.stdout, again.stdout
    pointer, moves = consistent(s)
    assert pointer == 1 and len(moves) == 1, again.stdout
    # The batch's retrain decision was recorded by the run that acted on it.
    rec = json.loads(next((s.model_dir("churn") / "batches").glob("*.json")).read_text())
    assert rec["decision"]["retrain"] is True and rec["decision"]["run_id"]
    # The dead run's MLflow runs were ended (KILLED), not left RUNNING for ever.
    from mlflow import MlflowClient

    c = MlflowClient(s.tracking_uri)
    runs = c.search_runs([c.get_experiment_by_name("churn").experiment_id])
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"], [r.info for r in runs]
    assert any(r.info.status == "KILLED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]


def test_the_store_is_rebuilt_from_the_registry(tmp_path):
    config, s = world(tmp_path)
    assert run_cli(config, "run").returncode == 0
    onnx = s.serving_dir / "churn" / "v1.onnx"
    onnx.write_bytes(b"garbage")  # a damaged champion file
    doc = json.loads(run_cli(config, "status", "--json").stdout)
    assert any("rebuilt from the registry" in r for r in doc["models"]["churn"]["repairs"])
    import shutil

    shutil.rmtree(s.serving_dir)  # the whole serving store lost
    shutil.rmtree(s.model_dir("churn") / "candidates")  # and the local cache of version files
    doc = json.loads(run_cli(config, "status", "--json").stdout)
    assert any("rebuilt from the registry" in r for r in doc["models"]["churn"]["repairs"]), doc["models"]
    assert champion_version(s, "churn") == 1
    from ml_platform.core import export
    from ml_platform.serving.store import ModelStore

    onnx_bytes, meta = ModelStore(s.serving_dir).read("churn", 1)
    export.session(onnx_bytes)  # a valid graph again
    assert meta["version"] == 1 and meta["classes"] == [0, 1]

    # a garbage champion pointer: named, and rebuilt from the version the registry names
    (s.serving_dir / "churn" / "current.json").write_text("not json at all")
    r = run_cli(config, "status", "--json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    repairs = json.loads(r.stdout)["models"]["churn"]["repairs"]
    assert any("current.json: not a valid pointer" in x for x in repairs), repairs
    assert any("rebuilt from the registry" in x for x in repairs), repairs
    assert champion_version(s, "churn") == 1
    # ... and by `run` as well (its summary reads the pointer before it repairs it)
    (s.serving_dir / "churn" / "current.json").write_text("not json at all")
    r = run_cli(config, "run")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout[-2000:] + r.stderr[-3000:]
    assert champion_version(s, "churn") == 1
