"""Every path to the champion goes through the gate: a candidate that failed a blocking check
never serves, whether the train run, a click on deployed_model alone, Materialize all, a
re-execution, the automation condition, `dagster asset materialize`, the rollback job or
`ml-platform rollback` asks for it."""

import os
import subprocess
import sys
import time

import dagster as dg
import numpy as np
import pytest

from ml_platform import names
from ml_platform.control.champion import champion_version
from ml_platform.control.decisions import ingest_tags
from ml_platform.control.operator_actions import approve, rollback
from ml_platform.control.promotion import PromotionError, move_champion
from ml_platform.control.runner import run_pending
from ml_platform.control.status import model_status
from ml_platform.core import audit
from ml_platform.core.landing import scan_landing
from ml_platform.core.simulate import generate_batch
from ml_platform.defs.definitions import build_definitions
from ml_platform.runtime.instance import prepare_environment
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import write_config

DEPLOY = dg.AssetKey(["churn", "deployed_model"])
CANDIDATE = dg.AssetKey(["churn", "candidate_model"])


def _land(landing, name, df, age=30):
    p = landing / name
    df.to_csv(p, index=False)
    t = time.time() - age
    os.utime(p, (t, t))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """v1 champion; v2 trained on shuffled labels: rejected by min_metric and not_worse."""
    root = tmp_path_factory.mktemp("gate_paths")
    write_config(
        root, extra="training: {window_batches: 1}\nretrain: {policy: on_arrival}\nautomation: {settle_seconds: 0}\n"
    )
    settings = load_settings(root / "ml_platform.yaml")
    saved = dict(os.environ)
    prepare_environment(settings)  # a persistent instance under storage_dir, as the CLI uses
    landing = settings.landing_dir("churn")
    _land(landing, "good.csv", generate_batch(1500, seed=1), age=60)
    bad = generate_batch(1500, seed=2, start_id=10_000)
    bad["churned"] = np.random.default_rng(0).permutation(bad["churned"].to_numpy())
    _land(landing, "shuffled.csv", bad, age=30)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.get()
    summary = run_pending(settings, defs, instance, echo=lambda *_: None)["churn"]
    trained = [o.train for o in summary if o.train]
    assert [t.version for t in trained] == [1, 2] and trained[0].deployed and not trained[1].deployed, trained
    yield {"settings": settings, "defs": defs, "instance": instance, "root": root}
    instance.dispose()
    os.environ.clear()
    os.environ.update(saved)  # this pytest worker runs other files next


def _moves(w):
    return [(m.previous, m.to) for m in audit.read(w["settings"].model_dir("churn"))]


def _assert_v1_serves(w, before):
    s = w["settings"]
    assert champion_version(s, "churn") == 1
    assert w["defs"].resources["ml_platform_registry"].champion_alias("churn") == 1
    assert _moves(w) == before, "no audit entry for a refused move"


def test_deployed_model_alone_refuses_a_failed_candidate(world):
    before = _moves(world)
    job = world["defs"].resolve_implicit_global_asset_job_def()
    res = job.execute_in_process(instance=world["instance"], asset_selection=[DEPLOY], raise_on_error=False)
    assert not res.success
    failure = next(e for e in res.all_events if e.is_step_failure)
    msg = failure.step_failure_data.error.message
    assert "v2 did not pass the gate" in msg and "min_metric failed" in msg, msg
    _assert_v1_serves(world, before)


def test_materialize_all_trains_a_new_candidate_and_the_gate_decides(world):
    before = _moves(world)
    job = world["defs"].resolve_implicit_global_asset_job_def()
    sel = [dg.AssetKey(["churn", a]) for a in ("training_set", "candidate_model", "deployed_model")]
    res = job.execute_in_process(instance=world["instance"], asset_selection=sel, raise_on_error=False)
    # The training window is the shuffled batch: the new candidate fails too, nothing moves.
    checks = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
    assert checks["min_metric"] is False, checks
    _assert_v1_serves(world, before)


def test_a_direct_move_and_rollbacks_refuse_it(world):
    s, defs = world["settings"], world["defs"]
    before = _moves(world)
    with pytest.raises(PromotionError, match="v2 did not pass the gate"):
        move_champion(s, defs.resources["ml_platform_registry"], None, "churn", 2, actor="test", reason="bypass")
    with pytest.raises(PromotionError, match="did not pass the gate"):
        rollback(s, defs.resources["ml_platform_registry"], None, "churn", to_version=2)
    job = defs.resolve_job_def("churn_rollback")
    res = job.execute_in_process(
        instance=world["instance"],
        raise_on_error=False,
        run_config={"ops": {"churn_rollback_champion": {"config": {"to_version": 2}}}},
    )
    assert not res.success
    _assert_v1_serves(world, before)


def test_reexecuting_the_rejected_train_run_refuses_it(world):
    inst, defs = world["instance"], world["defs"]
    failed = inst.get_runs(dg.RunsFilter(job_name="churn_train", statuses=[dg.DagsterRunStatus.FAILURE]))
    assert failed, "the rejected candidate's train run failed its gate"
    old = failed[-1]  # the oldest: v2's run
    before = _moves(world)
    # Re-execution of that run's deploy step: it loads v2 from the run's stored output.
    res = defs.resolve_job_def("churn_train").execute_in_process(
        instance=inst, asset_selection=[DEPLOY], raise_on_error=False, tags={"dagster/parent_run_id": old.run_id}
    )
    assert not res.success
    _assert_v1_serves(world, before)


def test_dagster_asset_materialize_cli_on_the_platform_instance_refuses_it(world):
    """The way a Dagster user does it, in the config's folder: `.env` points at the instance."""
    root = world["root"]
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "ML_PLATFORM_CONFIG")}
    before = _moves(world)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "ml_platform.defs.location",
            "--select",
            "churn/deployed_model",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "did not pass the gate" in out, out[-3000:]
    # Like the platform's own runs, at INFO (the instance's python_log_level), not DEBUG.
    assert " - ERROR - " in out and " - DEBUG - " not in out, out[-3000:]
    _assert_v1_serves(world, before)
    # ... and it ran on the platform's instance, not a temporary one.
    runs = world["instance"].get_runs(dg.RunsFilter(job_name="__ASSET_JOB"), limit=5)
    assert runs and runs[0].status == dg.DagsterRunStatus.FAILURE


BACKFILL_DAEMON_EVERY_2S = (
    "import runpy, dagster._daemon.controller as c; c.DEFAULT_DAEMON_INTERVAL_SECONDS = 2; "
    "runpy.run_module('dagster._daemon', run_name='__main__')"
)


def test_a_backfill_run_by_the_daemon_refuses_it(world):
    """The UI's "Materialize all" over partitions is a backfill that the daemon executes."""
    import signal

    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    from ml_platform.runtime.instance import workspace_path

    inst, defs, s = world["instance"], world["defs"], world["settings"]
    before = _moves(world)
    chain = [
        dg.AssetKey(["churn", a]) for a in ("validated_batch", "training_set", "candidate_model", "deployed_model")
    ]
    newest = inst.get_dynamic_partitions("churn_batches")[-1]  # the shuffled batch
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(),
        asset_graph=defs.resolve_asset_graph(),
        partition_names=[newest],
        asset_selection=chain,
        backfill_timestamp=time.time(),
        tags={},
        dynamic_partitions_store=inst,
        all_partitions=False,
        title=None,
        description=None,
        run_config=None,
    )
    inst.add_backfill(backfill)
    # The daemon as `dagster dev` runs it, its backfill loop every 2 s instead of Dagster's 30 s
    # (the backfill needs two iterations: the batch's partition, then the unpartitioned chain).
    daemon = subprocess.Popen(
        [sys.executable, "-c", BACKFILL_DAEMON_EVERY_2S, "run", "-w", str(workspace_path(s))],
        env=dict(os.environ),
        cwd=world["root"],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def deploy_runs():
        runs = inst.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
        return [r for r in runs if DEPLOY in (r.asset_selection or ())]

    try:  # the backfill's run that targets deployed_model, once it has finished
        deadline = time.time() + 300
        while time.time() < deadline and daemon.poll() is None:
            if any(r.is_finished for r in deploy_runs()):
                break
            time.sleep(0.5)
    finally:
        if inst.get_backfill(backfill.backfill_id).status == BulkActionStatus.REQUESTED:
            # never left "in progress": the automation condition waits on in-progress backfills
            inst.update_backfill(inst.get_backfill(backfill.backfill_id).with_status(BulkActionStatus.CANCELED))
        os.killpg(daemon.pid, signal.SIGKILL)
        out = daemon.communicate()[0]
    done = [r for r in deploy_runs() if r.is_finished]
    assert done, f"the backfill never finished its deploy run:\n{out[-3000:]}"
    assert done[0].status == dg.DagsterRunStatus.FAILURE, done[0]
    errors = [
        e.dagster_event.step_failure_data.error.message
        for e in inst.all_logs(done[0].run_id)
        if e.is_dagster_event and e.dagster_event.is_step_failure
    ]
    # Either the blocking check stops the step before it starts, or the step itself refuses.
    assert any("min_metric" in m or "did not pass the gate" in m for m in errors), errors
    _assert_v1_serves(world, before)


def test_automation_deploys_a_candidate_materialized_alone_iff_it_passes(world):
    """The declared automation sensor's condition: eager & all blocking checks passed."""
    defs, inst = world["defs"], world["instance"]
    sensors = [s for s in defs.sensors if isinstance(s, dg.AutomationConditionSensorDefinition)]
    assert sensors and sensors[0].default_status == dg.DefaultSensorStatus.RUNNING
    first = dg.evaluate_automation_conditions(defs=defs, instance=inst)  # eager() starts its cursor
    # The latest candidate (rejected) is materialized: nothing requested.
    res = dg.evaluate_automation_conditions(defs=defs, instance=inst, cursor=first.cursor)
    assert res.get_num_requested(DEPLOY) == 0
    # A passing candidate materialized alone (with its checks), as a click in the UI does it.
    s = world["settings"]
    _land(s.landing_dir("churn"), "good-again.csv", generate_batch(1500, seed=5, start_id=90_000), age=10)
    f = next(f for f in scan_landing(s.landing_dir("churn"), settle_seconds=0) if f.path.name == "good-again.csv")
    inst.add_dynamic_partitions("churn_batches", [f.partition_key])
    assert (
        defs.resolve_job_def("churn_ingest")
        .execute_in_process(instance=inst, partition_key=f.partition_key, tags=ingest_tags(f))
        .success
    )
    defs2 = defs
    job = defs2.resolve_implicit_global_asset_job_def()
    sel = [dg.AssetKey(["churn", "training_set"]), CANDIDATE]
    done = job.execute_in_process(instance=inst, asset_selection=sel, raise_on_error=False)
    checks = {e.check_name: e.passed for e in done.get_asset_check_evaluations()}
    assert all(checks.values()) and len(checks) == 5, checks
    res = dg.evaluate_automation_conditions(defs=defs2, instance=inst, cursor=res.cursor)
    assert res.get_num_requested(DEPLOY) == 1


def test_a_check_added_to_the_registry_is_enforced_on_every_path(world, monkeypatch):
    """The gate's checks are declared once (``names.gate_checks``): a check added there is
    asked for by every path to the champion, so a version judged before it existed is refused."""
    s, defs, inst = world["settings"], world["defs"], world["instance"]
    reg = defs.resources["ml_platform_registry"]
    passed = [int(v.version) for v in reg.versions("churn") if names.gate_passed(v.tags, names.gate_checks())]
    target = max(v for v in passed if v != champion_version(s, "churn"))  # passed the 5 built-in checks
    before = _moves(world)
    monkeypatch.setattr(names, "BUILTIN_GATE_CHECKS", (*names.BUILTIN_GATE_CHECKS, "fairness"))
    with pytest.raises(PromotionError, match="fairness not run"):
        move_champion(s, reg, None, "churn", target, actor="test", reason="direct")
    with pytest.raises(PromotionError, match="fairness not run"):
        rollback(s, reg, None, "churn", target, actor="test")
    with pytest.raises(PromotionError):
        approve(s, reg, None, "churn", target, by="test")
    job = defs.resolve_implicit_global_asset_job_def()  # a lone Materialize of deployed_model
    res = job.execute_in_process(instance=inst, asset_selection=[DEPLOY], raise_on_error=False)
    assert not res.success
    doc = model_status(s, reg, "churn")
    v = next(v for v in doc["versions"] if v["version"] == target)
    assert v["gate_state"] == "pending" and not v["gate_passed"], v
    _assert_v1_serves(world, before)


def test_user_check_typed_labels_fixed_code_retrains_and_check_judges_offline(tmp_path, capsys):
    """A staged model (deploy.strategy: shadow) whose first candidate a buggy user check refused:
    the refusal's reason is one short line; fixing the check retrains at the next `run` with no
    champion yet (trigger code); the check sees the target typed as `classes`; `ml-platform
    check` judges the offline gate only (live_shadow needs live traffic) and passes."""
    from ml_platform.cli.main import main as cli_main

    def configure(check: str):
        write_config(
            tmp_path,
            extra="training: {window_batches: 1}\nretrain: {policy: on_arrival}\nautomation: {settle_seconds: 0}\n"
            f"deploy: {{strategy: shadow}}\ngate: {{checks: ['ml_platform_tests.user_code.checks:{check}']}}\n",
        )
        s = load_settings(tmp_path / "ml_platform.yaml")
        prepare_environment(s)
        return s, build_definitions(s)

    saved = dict(os.environ)
    try:
        s, defs = configure("positive_rate_buggy")
        instance = dg.DagsterInstance.get()
        _land(s.landing_dir("churn"), "b1.csv", generate_batch(800, seed=1))
        (v1,) = [o.train for o in run_pending(s, defs, instance, echo=lambda *_: None)["churn"] if o.train]
        reason = dict((c, r) for c, _, r in v1.gate)["positive_rate_buggy"]
        assert not v1.deployed and champion_version(s, "churn") is None, v1
        assert reason.startswith("positive_rate_buggy raised TypeError: Could not convert") and len(reason) < 220, (
            reason
        )

        s, defs = configure("positive_rate")  # the fix: a new code version, and still no champion
        lines: list[str] = []
        (code,) = run_pending(s, defs, instance, echo=lines.append)["churn"]
        assert code.kind == "code" and "no champion yet; newest candidate v1" in code.decision, lines
        verdicts = {c: (p, r) for c, p, r in code.train.gate}
        assert verdicts["positive_rate"][0] and "types ['int']" in verdicts["positive_rate"][1], verdicts
        assert code.train.deployed and champion_version(s, "churn") == 2, code.train
        assert not [o for o in run_pending(s, defs, instance, echo=lambda *_: None)["churn"] if o.train]

        capsys.readouterr()
        assert cli_main(["--config", str(tmp_path / "ml_platform.yaml"), "check"]) == 0
        out = capsys.readouterr().out
        assert "would PASS" in out and "live_shadow: not judged here" in out, out
        assert "gate live_shadow" not in out, out
        instance.dispose()
    finally:
        os.environ.clear()
        os.environ.update(saved)
