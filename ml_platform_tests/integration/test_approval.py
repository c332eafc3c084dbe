"""deploy.approval: required on a real instance: a passing candidate waits for a person (status,
the asset page), is approved from the CLI or by materializing deployed_model alone in the UI
(the audit names who), or rejected (the champion stays); a failed candidate cannot be approved;
`ml-platform train` (a subprocess) prints its gate verdict; `status --json` carries the payoff."""

import json
import os
import time

import dagster as dg
import numpy as np
import pytest

from ml_platform.cli.main import main as cli_main
from ml_platform.control import staging
from ml_platform.control.champion import champion_version
from ml_platform.control.champion import store as model_store
from ml_platform.control.operator_actions import reject
from ml_platform.control.runner import run_pending
from ml_platform.core import audit
from ml_platform.core.simulate import generate_batch
from ml_platform.defs.definitions import build_definitions
from ml_platform.names import LIVE_CHECK, gate_reason_tag, gate_tag
from ml_platform.resources.registry import registry_for
from ml_platform.runtime.instance import prepare_environment
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import write_config
from ml_platform_tests.e2e import warm

DEPLOY = dg.AssetKey(["churn", "deployed_model"])
PAYOFF = dg.AssetKey(["churn", "payoff"])
ROWS = 800


def _land(w, name, df, age):
    p = w["settings"].landing_dir("churn") / name
    df.to_csv(p, index=False)
    t = time.time() - age
    os.utime(p, (t, t))


def _ingest_and_train(w, name, df):
    _land(w, name, df, age=5)
    out = run_pending(w["settings"], w["defs"], w["instance"], echo=lambda *_: None)["churn"]
    trained = [o.train for o in out if o.train]
    assert len(trained) == 1, out
    return trained[0]


def _cli(w, capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli_main(["--config", str(w["root"] / "ml_platform.yaml"), *args])
    got = capsys.readouterr()
    return code, got.out, got.err


def _status(w, capsys) -> dict:
    code, out, err = _cli(w, capsys, "status", "--json")
    assert code == 0, err
    return json.loads(out)["models"]["churn"]


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    root = tmp_path_factory.mktemp("approval")
    write_config(
        root,
        extra="training: {window_batches: 1}\nretrain: {policy: on_arrival}\n"
        "automation: {settle_seconds: 0}\ndeploy: {approval: required}\n"
        "gate: {max_regression: 0.3}\n",
    )  # tiny batches: noisy comparisons
    settings = load_settings(root / "ml_platform.yaml")
    saved = dict(os.environ)
    prepare_environment(settings)
    w = {"settings": settings, "root": root, "defs": build_definitions(settings), "instance": dg.DagsterInstance.get()}
    w["first"] = _ingest_and_train(w, "b1.csv", generate_batch(ROWS, seed=1))
    yield w
    w["instance"].dispose()
    os.environ.clear()
    os.environ.update(saved)


def _moves(w):
    return audit.read(w["settings"].model_dir("churn"))


def test_a_passing_candidate_waits_for_a_person(w, capsys):
    t = w["first"]
    assert t.version == 1 and all(p for _, p, _ in t.gate), t.gate
    assert t.awaiting_approval and not t.deployed, t
    assert champion_version(w["settings"], "churn") is None and _moves(w) == []
    st = _status(w, capsys)
    assert st["approval"]["mode"] == "required"
    assert [a["version"] for a in st["approval"]["awaiting"]] == [1], st["approval"]
    code, out, _ = _cli(w, capsys, "status")
    assert "AWAITING APPROVAL: v1" in out, out
    # The asset page: an observation on deployed_model, no materialization.
    inst = w["instance"]
    assert inst.get_latest_materialization_event(DEPLOY) is None
    obs = inst.fetch_observations(DEPLOY, limit=1).records
    assert obs and obs[0].asset_observation.metadata["approval"].value == "awaiting approval: v1", obs
    # The automation never deploys it.
    defs = w["defs"]
    first = dg.evaluate_automation_conditions(defs=defs, instance=inst)
    again = dg.evaluate_automation_conditions(defs=defs, instance=inst, cursor=first.cursor)
    assert first.get_num_requested(DEPLOY) == 0 and again.get_num_requested(DEPLOY) == 0


def test_approve_from_the_cli_deploys_it_and_records_who(w, capsys):
    code, out, err = _cli(w, capsys, "approve", "--model", "churn", "--by", "alice")
    assert code == 0, err
    assert "v1 approved by alice" in out, out
    assert champion_version(w["settings"], "churn") == 1
    last = _moves(w)[-1]
    assert (last.kind, last.to, last.actor) == ("deploy", 1, "alice (cli)"), last
    assert last.at[:4] == time.strftime("%Y", time.gmtime())
    tags = w["defs"].resources["ml_platform_registry"].version("churn", 1).tags
    assert (tags["approval"], tags["approval.by"]) == ("approved", "alice"), tags
    assert _status(w, capsys)["approval"]["awaiting"] == []


def test_materializing_deployed_model_alone_in_the_ui_approves_the_newest(w):
    t = _ingest_and_train(w, "b2.csv", generate_batch(ROWS, seed=2, start_id=10_000))
    assert t.version == 2 and t.awaiting_approval, t
    assert champion_version(w["settings"], "churn") == 1
    job = w["defs"].resolve_implicit_global_asset_job_def()
    res = job.execute_in_process(
        instance=w["instance"], asset_selection=[DEPLOY], raise_on_error=False, tags={"ml_platform/approved_by": "bob"}
    )
    assert res.success, [e.message for e in res.all_events if e.is_step_failure]
    assert champion_version(w["settings"], "churn") == 2
    last = _moves(w)[-1]
    assert last.to == 2 and last.actor.startswith("bob (dagster run "), last


def test_reject_records_it_and_leaves_the_champion(w, capsys):
    t = _ingest_and_train(w, "b3.csv", generate_batch(ROWS, seed=3, start_id=20_000))
    assert t.version == 3 and t.awaiting_approval, t
    code, out, err = _cli(w, capsys, "reject", "--model", "churn", "--by", "carol", "--reason", "too soon")
    assert code == 0 and "v3 rejected by carol" in out, (out, err)
    assert champion_version(w["settings"], "churn") == 2
    last = _moves(w)[-1]
    assert (last.kind, last.candidate, last.to, last.actor) == ("reject", 3, 2, "carol (cli)"), last
    assert "too soon" in last.reason
    st = _status(w, capsys)
    assert st["approval"]["awaiting"] == []
    assert next(v for v in st["versions"] if v["version"] == 3)["approval"] == "rejected"
    # A rejected candidate stays out, however it is asked for.
    code, _, err = _cli(w, capsys, "approve", "--model", "churn", "--version", "3")
    assert code == 1 and "rejected by carol" in err, err
    job = w["defs"].resolve_implicit_global_asset_job_def()
    res = job.execute_in_process(instance=w["instance"], asset_selection=[DEPLOY], raise_on_error=False)
    assert not res.success and champion_version(w["settings"], "churn") == 2


def test_rejecting_a_staged_candidate_with_a_very_long_reason_ends_its_stage_and_is_audited(tmp_path):
    """reject's withdraw is staging's one refusal path (its cap on the verdict's reason): a reason
    over MLflow's 100,000-character tag limit failed after the rejection tag, with no audit entry."""
    s = load_settings(write_config(tmp_path, extra="deploy: {strategy: shadow}\n"))
    registry = registry_for(s)
    v = registry.register_restored("churn", None, {})  # a registered version, no training
    store = model_store(s)
    for path in (store.onnx_path("churn", v), store.meta_path("churn", v)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"{}")
    store.stage("churn", {"version": v, "mode": "shadow", "champion": None, "trigger": "test"})
    reason = "x" * 200_000
    out = reject(s, registry, "churn", by="erin", reason=reason)
    assert out.stage_ended and staging.staged(s, "churn") is None, out
    tags = registry.version("churn", v).tags
    assert tags[gate_tag(LIVE_CHECK)] == "failed" and len(tags[gate_reason_tag(LIVE_CHECK)]) == 5000, len(tags)
    last = audit.read(s.model_dir("churn"))[-1]
    assert (last.kind, last.candidate, last.actor) == ("reject", v, "erin (cli)") and reason in last.reason, last.kind


def test_the_repair_of_a_dead_train_run_does_not_deploy_in_approval_mode(w):
    from ml_platform.control import run_health

    reg = w["defs"].resources["ml_platform_registry"]
    run = w["instance"].get_run_by_id(reg.version("churn", 3).tags["dagster_run_id"])
    retrain, note = run_health.salvage_train_run(w["settings"], reg, None, "churn", run)
    assert not retrain and "awaits approval" in note, note
    assert champion_version(w["settings"], "churn") == 2


def test_approving_a_failed_candidate_is_refused_with_the_gate_reasons(w, capsys):
    bad = generate_batch(ROWS, seed=4, start_id=30_000)
    bad["churned"] = np.random.default_rng(0).permutation(bad["churned"].to_numpy())
    t = _ingest_and_train(w, "b4-shuffled.csv", bad)
    assert t.version == 4 and not t.awaiting_approval and not t.deployed, t
    before = len(_moves(w))
    code, _, err = _cli(w, capsys, "approve", "--model", "churn", "--version", "4", "--by", "dave")
    assert code == 1, err
    assert "v4 did not pass the gate" in err and "min_metric failed" in err, err
    assert champion_version(w["settings"], "churn") == 2 and len(_moves(w)) == before


def test_ml_platform_train_prints_the_gate_verdict(w):
    """The CLI as a user runs it; the newest batch (the window) has shuffled labels: rejected."""
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "ML_PLATFORM_CONFIG")}
    t0 = time.monotonic()
    r = warm.run(
        [
            "train",
            "--model",
            "churn",
            "--by",
            "erin",
            "--config",
            str(w["root"] / "ml_platform.yaml"),
        ],
        cwd=w["root"],
        env=env,
        timeout=300,
    )
    out = r.stdout + r.stderr
    print(f"ml-platform train took {time.monotonic() - t0:.1f} s")
    assert r.returncode == 0, out[-3000:]
    assert "training a candidate (trigger manual, by erin)" in out, out[-3000:]
    assert "gate min_metric: FAIL" in out and "candidate v5: rejected by the gate" in out, out[-3000:]
    # D5 (issue 20 re-run): a refusal reads as one, the checks' reasons and no Dagster stack trace
    assert "DagsterAssetCheckFailedError" not in out and "Stack Trace" not in out, r.stderr[-3000:]
    # the verdicts once, in the summary: the checks' own log lines (what `up` shows) stay out
    assert "v5 gate min_metric" not in out and "the gate refused the candidate" not in out, out[-3000:]
    tags = w["defs"].resources["ml_platform_registry"].version("churn", 5).tags
    assert tags["trigger"] == "manual", tags
    runs = w["instance"].get_runs(dg.RunsFilter(job_name="churn_train"), limit=1)
    assert runs[0].tags.get("ml_platform/trigger") == "manual"


def test_status_json_carries_the_payoff_and_the_asset_shows_it(w, capsys):
    p = _status(w, capsys)["payoff"]
    assert p["retrains"] == 5 and p["retrains_by_trigger"] == {"arrival": 4, "manual": 1}, p
    blocked = {b["version"]: b for b in p["blocked"]}
    assert set(blocked) == {3, 4, 5}, blocked
    assert blocked[3]["by"] == "person" and "carol" in blocked[3]["why"][0]
    assert blocked[4]["by"] == "gate" and any(r.startswith("min_metric:") for r in blocked[4]["why"]), blocked[4]
    assert p["bad_deploys_prevented"] == 2
    assert [(m["previous"], m["to"]) for m in p["promotions"]] == [(None, 1), (1, 2)], p["promotions"]
    assert p["train_runs_timed"] == 5 and p["train_seconds_total"] > 0, p
    res = (
        w["defs"]
        .resolve_implicit_global_asset_job_def()
        .execute_in_process(instance=w["instance"], asset_selection=[PAYOFF])
    )
    meta = res.asset_materializations_for_node("churn__payoff")[0].metadata
    assert meta["retrains"].value == 5 and meta["bad_deploys_prevented"].value == 2
    assert isinstance(meta["promotions"], dg.TableMetadataValue) and len(meta["promotions"].records) == 2
    assert "|" in meta["served_per_batch"].value, meta["served_per_batch"]  # the v1 -> v2 move
    assert meta["chart"].value.startswith("![served roc_auc per batch](data:image/png;base64,")
