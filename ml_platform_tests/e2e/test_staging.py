"""Staging before production with real processes: the endpoint (`ml-platform serve`, two workers) loads
a gated candidate beside the champion; a shadow never answers a client and becomes champion after N
mirrored requests, pooled from both workers (through a kill -9 of the endpoint, which resumes from
the recorded count, and of the judging `ml-platform run`); a candidate trained on corrupted labels
passes the offline gate but is refused on live rows, with reasons (through a kill -9 of its judge
after the verdict); a newer candidate supersedes a staged one (every worker swaps to it); a canary
answers a sticky share, the same in both workers, and one that breaks the latency budget in one
worker is stopped in the other by its marker, then refused. With `deploy.approval: required`: a
shadow runs first and a person approves it with its live evidence shown; a canary is approved before
it starts, survives a kill -9 of its judge unpromoted and a kill -9 of the endpoint (resumed: same
share, same sticky answers, the count going on), and `ml-platform rollback` during it puts every
request back on the champion. `ml-platform reject` of a candidate in shadow ends its shadow at once,
in every worker.

Training and judging run in-process on a real Dagster instance and MLflow (as `ml-platform run`
does); the endpoint is a real process on a free loopback port."""

import contextlib
import io
import os
import signal
import time
from collections import Counter

import dagster as dg
import httpx
import numpy as np
import pytest

from ml_platform.cli.main import main as cli_main
from ml_platform.control import staging
from ml_platform.control.champion import champion_version
from ml_platform.control.champion import store as model_store
from ml_platform.control.promotion import PromotionError
from ml_platform.control.runner import run_pending, train_now
from ml_platform.core import audit, stage_files
from ml_platform.core import staging as live
from ml_platform.core.simulate import generate_batch
from ml_platform.defs.definitions import build_definitions
from ml_platform.names import COL_REQUEST, LIVE_CHECK, gate_reason_tag, gate_tag
from ml_platform.resources.registry import registry_for
from ml_platform.runtime.instance import prepare_environment
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import free_port, write_config
from ml_platform_tests.e2e import warm
from ml_platform_tests.e2e.helpers import start, stop, wait_for

pytestmark = pytest.mark.e2e

ROWS = 800
NEED = 60
WORKERS = 2  # serving.workers: every staging decision is pooled over both
DEPLOY = f"deploy: {{strategy: shadow, shadow: {{min_requests: {NEED}}}}}\n"
FEATURES = [
    "tenure_months",
    "monthly_charges",
    "support_calls",
    "usage_gb",
    "age",
    "plan",
    "contract",
    "region",
    "payment_method",
]


def _land(w, name, df):
    p = w["settings"].landing_dir("churn") / name
    df.to_csv(p, index=False)
    t = time.time() - 5
    os.utime(p, (t, t))


def _quiet(*_):
    pass


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    root = tmp_path_factory.mktemp("staging")
    port = free_port()
    config = write_config(
        root,
        port=port,
        poll_seconds=0.2,
        extra="training: {window_batches: 1}\nautomation: {settle_seconds: 0}\n" + DEPLOY,
    )
    # two workers; idle connections kept long enough for a test to pin one to each worker
    text = config.read_text().replace(
        "poll_seconds: 0.2}", f"poll_seconds: 0.2, workers: {WORKERS}, keep_alive_seconds: 120}}"
    )
    config.write_text(text)
    settings = load_settings(config)
    assert settings.serving.workers == WORKERS
    saved = dict(os.environ)
    prepare_environment(settings)
    w = {
        "settings": settings,
        "config": config,
        "root": root,
        "url": f"http://127.0.0.1:{port}",
        "defs": build_definitions(settings),
        "instance": dg.DagsterInstance.get(),
        "procs": [],
        "deploy": DEPLOY,
    }
    _land(w, "b1.csv", generate_batch(ROWS, seed=1))
    run_pending(settings, w["defs"], w["instance"], echo=_quiet)
    w["endpoint"] = _serve(w)
    yield w
    for p in w["procs"]:
        stop(p)
    w["instance"].dispose()
    os.environ.clear()
    os.environ.update(saved)


def _serve(w):
    p = start(w["config"], "serve", log=w["root"] / f"serve-{len(w['procs'])}.log")
    w["procs"].append(p)
    wait_for(lambda: httpx.get(w["url"] + "/v2/health/ready", timeout=2).status_code == 200, 60, what="endpoint")
    return p


def _staged(w):
    return httpx.get(w["url"] + "/v2/models/churn", timeout=5).json().get("staged")


def _rows(df):
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in df[["customer_id", *FEATURES]].to_dict("records")
    ]


def _post(c, row, rid):
    r = c.post("/models/churn/invocations", json={"dataframe_records": [row]}, headers={"X-Request-Id": rid})
    assert r.status_code == 200, r.text
    return r.headers["x-model-version"]


def _send(w, rows, prefix):
    with httpx.Client(base_url=w["url"], timeout=10) as c:
        return [_post(c, row, f"{prefix}-{i}") for i, row in enumerate(rows)]


def _send_split(clients, rows, prefix):
    """Row i to worker i % WORKERS (``clients``: from ``_workers``); -> the answering versions."""
    return [_post(clients[i % len(clients)], row, f"{prefix}-{i}") for i, row in enumerate(rows)]


def _view(c) -> dict:
    return c.get("/v2/models/churn").json()


@contextlib.contextmanager
def _workers(w):
    """One keep-alive connection per endpoint worker (a connection stays with the worker that
    accepted it), in worker pid order."""
    pinned, spare = {}, []
    deadline = time.time() + 60
    try:
        while len(pinned) < WORKERS:
            assert time.time() < deadline, f"only workers {sorted(pinned)} accepted connections"
            c = httpx.Client(base_url=w["url"], timeout=10)
            try:
                pid = _view(c)["worker"]
            except httpx.HTTPError:
                c.close()
                time.sleep(0.2)
                continue
            if pid in pinned:
                spare.append(c)  # kept open meanwhile: the next connection may land on the other worker
            else:
                pinned[pid] = c
        for c in spare:
            c.close()
        yield [pinned[p] for p in sorted(pinned)]
    finally:
        for c in [*pinned.values(), *spare]:
            c.close()


def _on_every_worker(clients, pred, what):
    wait_for(lambda: all(pred(_view(c)) for c in clients), 30, interval=0.1, what=what)


def _staged_is(version, **fields):
    return lambda m: (
        (m["staged"] or {}).get("version") == version and all(m["staged"].get(k) == v for k, v in fields.items())
    )


def _rows_per_worker(w, version, prefix=""):
    """Mirrored rows (with both outputs) whose request id starts with ``prefix``, by the pid of the
    worker that recorded them (in the evidence file's name)."""
    out = Counter()
    for f in stage_files.evidence_files(staging.evidence_dir(w["settings"], "churn"), version):
        pid = f.stem.rsplit("-", 1)[1]
        for _, block in live.evidence_blocks(f):
            out[pid] += sum(1 for r in block["rid"] if r.startswith(prefix)) if isinstance(block, dict) else 0
    return +out


def _recorded(w, version):
    return live.count_rows(staging.evidence_dir(w["settings"], "churn"), version)


def _status_text(w) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli_main(["--config", str(w["config"]), "status"]) == 0
    return buf.getvalue()


def _tags(w, version):
    return registry_for(w["settings"]).version("churn", version).tags


def test_first_model_is_direct(w):
    assert champion_version(w["settings"], "churn") == 1
    assert _tags(w, 1)[gate_tag(LIVE_CHECK)] == "passed"
    assert "first model" in _tags(w, 1)[gate_reason_tag(LIVE_CHECK)]


def test_shadow_never_answers_and_is_promoted_after_n_mirrored_requests(w):
    s = w["settings"]
    _land(w, "b2.csv", generate_batch(ROWS, seed=2, start_id=10_000))
    run_pending(s, w["defs"], w["instance"], echo=_quiet)  # ingest (no retrain: on_drift)
    t = train_now(s, w["defs"], w["instance"], "churn", by="test", echo=_quiet)
    assert t.version == 2 and all(p for _, p, _ in t.gate), t.gate
    assert champion_version(s, "churn") == 1 and staging.staged(s, "churn")["version"] == 2
    assert staging.progress(s, "churn").line() == f"v2 in shadow behind v1: 0/{NEED} requests"
    live_rows = _rows(generate_batch(NEED, seed=20, start_id=50_000))
    with _workers(w) as both:
        _on_every_worker(both, _staged_is(2, mode="shadow"), "every worker loads the shadow")
        assert set(_send_split(both, live_rows[:30], "a")) == {"1"}  # every answer is the champion's
        wait_for(lambda: _recorded(w, 2) >= 30, 30, what="evidence on disk")
    assert sorted(_rows_per_worker(w, 2, "a-").values()) == [15, 15]  # both workers mirror their requests
    # kill -9 of the endpoint (both workers) during shadow: the restart resumes from the recorded
    # count, not from zero
    os.killpg(w["endpoint"].pid, signal.SIGKILL)
    w["endpoint"].wait(10)
    w["endpoint"] = _serve(w)
    assert f"v2 in shadow behind v1: 30/{NEED} requests\n" in _status_text(w)  # not due yet
    with _workers(w) as both:
        _on_every_worker(both, _staged_is(2, mode="shadow"), "every restarted worker resumes the shadow")
        assert set(_send_split(both, live_rows[30:], "b")) == {"1"}
        wait_for(lambda: _recorded(w, 2) >= NEED, 30, what="N mirrored requests")
    # one decision over every worker's evidence: no worker alone has N rows, together they have
    per_worker = _rows_per_worker(w, 2)
    assert len(per_worker) == 2 * WORKERS and max(per_worker.values()) < NEED, per_worker
    due = f"v2 in shadow behind v1: {NEED}/{NEED} requests - due: the staging sensor"
    assert sum(per_worker.values()) == NEED and due in _status_text(w)
    ev = live.read_evidence(staging.evidence_dir(s, "churn"), 2)
    assert {f"a-{i}" for i in range(30)} <= set(ev.rows[COL_REQUEST])

    # kill -9 of the judging process after the verdict, before the move: no promotion yet ...
    env = {**os.environ, "ML_PLATFORM_FAULT": "stage:judged"}
    r = cli_env(w, env, "run")
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    assert champion_version(s, "churn") == 1 and staging.staged(s, "churn")["version"] == 2
    assert audit.read_intent(s.model_dir("churn")) is None
    # ... and the next run converges: promoted through move_champion, trigger and reason recorded;
    # its summary says the champion moved although it trained nothing
    r = cli_env(w, dict(os.environ), "run")
    assert r.returncode == 0 and "serving version: 2 (was 1)" in r.stdout, r.stdout + r.stderr
    assert champion_version(s, "churn") == 2
    assert staging.staged(s, "churn") is None
    last = [e for e in audit.read(s.model_dir("churn")) if e.moved][-1]
    assert last.to == 2 and last.previous == 1 and last.trigger == "manual"
    assert "passed the live comparison (shadow)" in last.reason, last.reason
    assert registry_for(s).champion_alias("churn") == 2
    wait_for(lambda: _send(w, live_rows[:1], "c") == ["2"] and _staged(w) is None, 30, what="v2 serving")
    # the UI: live_shadow's page has the verdict, the criteria as a table and the two score histograms
    key = dg.AssetCheckKey(dg.AssetKey(["churn", "candidate_model"]), LIVE_CHECK)
    rec = w["instance"].event_log_storage.get_asset_check_execution_history(key, limit=1)[0]
    md = rec.event.dagster_event.event_specific_data.metadata
    assert md["Verdict"].value.startswith("promoted: ") and isinstance(md["criteria"], dg.TableMetadataValue)
    criteria = {r.data["criterion"]: r.data["verdict"] for r in md["criteria"].records}
    assert criteria["candidate errors"] == criteria["score distance (KS)"] == "pass", criteria
    assert md["scores"].value.startswith("![live scores") and "data:image/png;base64," in md["scores"].value


def cli_env(w, env, *args):
    return warm.run(["--config", w["config"], *args], cwd=w["root"], env=env)


def test_a_candidate_worse_on_live_rows_is_refused_with_reasons(w):
    s = w["settings"]
    bad = generate_batch(ROWS, seed=3, start_id=20_000)
    bad["churned"] = 1 - bad["churned"]  # corrupted labels: its own holdout agrees with them
    _land(w, "b3.csv", bad)
    run_pending(s, w["defs"], w["instance"], echo=_quiet)
    if staging.staged(s, "churn") is None:
        train_now(s, w["defs"], w["instance"], "churn", by="test", echo=_quiet)
    v = staging.staged(s, "churn")["version"]
    assert v == 3 and champion_version(s, "churn") == 2
    truth = generate_batch(150, seed=30, start_id=60_000)
    with _workers(w) as both:
        _on_every_worker(both, _staged_is(v), "every worker loads the shadow")
        assert set(_send_split(both, _rows(truth), "d")) == {"2"}
    wait_for(lambda: _recorded(w, v) >= len(truth), 30, what="evidence")
    # it disagrees with the champion and no labels are in yet: judged once, the shadow (which answers
    # no client) waits for labelled live rows, as after a concept change, and is not judged again
    # before labels land
    out = staging.judge_and_conclude(s, registry_for(s), None, "churn", actor="test")
    assert out.state == "pending" and stage_files.WAITING_FOR_LABELS in out.reason, out.reason
    assert "agree on" in out.reason and staging.ready(s, "churn") is None, out.reason
    assert stage_files.WAITING_FOR_LABELS in _status_text(w)
    _land(w, "b4.csv", truth)  # the labels of the live rows arrive later, ids and all
    # the judging `run` killed after it recorded the refusal, before the stage ended: the next look
    # finishes that refusal (judged again, more evidence could have promoted it)
    r = cli_env(w, {**os.environ, "ML_PLATFORM_FAULT": "stage:refused"}, "run")
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    assert staging.staged(s, "churn")["version"] == v and _tags(w, v)[gate_tag(LIVE_CHECK)] == "failed"
    run_pending(s, w["defs"], w["instance"], echo=_quiet)
    assert champion_version(s, "churn") == 2 and staging.staged(s, "churn") is None
    key = dg.AssetCheckKey(dg.AssetKey(["churn", "candidate_model"]), LIVE_CHECK)
    last = w["instance"].event_log_storage.get_asset_check_execution_history(key, limit=1)[0]
    md = last.event.dagster_event.event_specific_data.metadata
    assert md["Verdict"].value.startswith("refused: ") and "criteria" not in md, md  # not judged again
    tags = _tags(w, v)
    assert tags[gate_tag(LIVE_CHECK)] == "failed"
    why = tags[gate_reason_tag(LIVE_CHECK)]
    assert "agree on" in why and "live rows" in why, why
    refusal = audit.read(s.model_dir("churn"))[-1]
    assert refusal.kind == "refuse" and refusal.candidate == v and refusal.to == 2
    # the realised metric on the labelled live rows, by the gate's paired-bootstrap rule
    assert "labelled live rows" in why, why
    assert "in shadow" not in _status_text(w)
    with pytest.raises(PromotionError, match=f"v{v} was refused on live traffic: candidate and champion agree"):
        staging.stage(s, registry_for(s), None, "churn", v, actor="test", trigger="manual")  # a refusal stands


def test_a_newer_candidate_supersedes_the_staged_one(w):
    s = w["settings"]
    _land(w, "b5.csv", generate_batch(ROWS, seed=5, start_id=30_000))
    run_pending(s, w["defs"], w["instance"], echo=_quiet)
    if staging.staged(s, "churn") is None:  # the ingest did not retrain by itself
        train_now(s, w["defs"], w["instance"], "churn", by="test", echo=_quiet)
    v1 = staging.staged(s, "churn")["version"]
    with _workers(w) as both:
        _on_every_worker(both, _staged_is(v1, mode="shadow"), "every worker loads the first shadow")
        train_now(s, w["defs"], w["instance"], "churn", by="test", echo=_quiet)
        v2 = staging.staged(s, "churn")["version"]
        assert v2 == v1 + 1
        # the endpoint mirrors to the newer one only, in every worker
        _on_every_worker(both, _staged_is(v2, mode="shadow"), "every worker swaps to the newer shadow")
    assert _tags(w, v1)[gate_tag(LIVE_CHECK)] == "failed"
    why = f"superseded by v{v2}, a newer candidate staged while v{v1} was in shadow"
    assert why in _tags(w, v1)[gate_reason_tag(LIVE_CHECK)]
    refusal = next(e for e in reversed(audit.read(s.model_dir("churn"))) if e.candidate == v1)
    assert refusal.kind == "refuse" and why in refusal.reason and refusal.to == 2, refusal
    assert champion_version(s, "churn") == 2


def test_canary_answers_a_sticky_share_and_a_failing_one_is_rolled_back(w):
    s = w["settings"]
    store = model_store(s)
    v = staging.staged(s, "churn")["version"]
    rec = {**store.staged("churn"), "mode": "canary", "share": 0.25}
    store.stage("churn", rec)
    httpx.post(w["url"] + "/admin/reload", timeout=30)  # one worker; the other at its next poll
    rows = _rows(generate_batch(400, seed=40, start_id=70_000))
    with _workers(w) as (one, other):
        _on_every_worker((one, other), _staged_is(v, mode="canary"), "every worker routes the canary")
        first = dict(zip((r["customer_id"] for r in rows), _send_split([one], rows, "e")))
        share = sum(x == str(v) for x in first.values()) / len(first)
        assert 0.15 < share < 0.35, share
        again = _send_split([other], rows[:80], "f")
        assert again == [first[r["customer_id"]] for r in rows[:80]]  # sticky per id, in every worker

        # the same candidate, held to a latency budget no live call can meet: the worker that sees it
        # rolls it back at once ...
        store.stage("churn", {**rec, "share": 0.3, "latency_budget_ms": 1e-6})
        _on_every_worker((one, other), _staged_is(v, share=0.3), "every worker holds it to the new budget")
        got = _send_split([one], rows[:60], "g")
        assert got.count(str(v)) <= 3, got  # three strikes at most, then every answer is the champion's
        assert set(_send_split([one], rows[:40], "h")) == {"2"}
        # ... and the other worker stops routing to it at its next poll, from the marker, before a
        # single strike of its own
        marks = sorted(staging.evidence_dir(s, "churn").glob(f"stage-v{v}-failed-*.json"))
        assert [m.name for m in marks] == [f"stage-v{v}-failed-{_view(one)['worker']}.json"]
        wait_for(
            lambda: "rolled back by another worker" in (_view(other)["staged"]["failed"] or ""),
            30,
            interval=0.1,
            what="the other worker reads the marker",
        )
        assert set(_send_split([other], rows[:80], "i")) == {"2"}
        assert len(list(staging.evidence_dir(s, "churn").glob(f"stage-v{v}-failed-*.json"))) == 1
    assert live.failures(staging.evidence_dir(s, "churn"), v)
    out = staging.judge_and_conclude(s, registry_for(s), None, "churn", actor="test")
    assert out.state == "refused" and "latency budget" in out.reason, out.reason
    assert champion_version(s, "churn") == 2 and staging.staged(s, "churn") is None


def _reconfigure(w, deploy: str) -> None:
    """The same platform with other ``deploy`` keys (the endpoint does not read them)."""
    w["config"].write_text(w["config"].read_text().replace(w["deploy"], deploy))
    w["settings"] = load_settings(w["config"])
    w["defs"] = build_definitions(w["settings"])
    w["deploy"] = deploy


def _cli(w, *args) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(["--config", str(w["config"]), *args])
    return code, out.getvalue() + err.getvalue()


def test_with_approval_a_shadow_runs_first_and_a_person_approves_it_with_its_evidence(w):
    _reconfigure(w, f"deploy: {{strategy: shadow, approval: required, shadow: {{min_requests: {NEED}}}}}\n")
    s = w["settings"]
    t = train_now(s, w["defs"], w["instance"], "churn", by="test", echo=_quiet)
    v = t.version
    assert staging.staged(s, "churn")["version"] == v and champion_version(s, "churn") == 2
    assert "AWAITING APPROVAL" not in _status_text(w)  # nothing to decide before the live evidence
    early = f"v{v} has not passed live_shadow yet (v{v} in shadow behind v2: 0/{NEED} requests)"
    for asked in (["--version", str(v)], []):  # that version, or the newest awaiting
        code, said = _cli(w, "approve", "--model", "churn", *asked)
        assert code == 1 and early in said, said
    with _workers(w) as both:
        _on_every_worker(both, _staged_is(v, mode="shadow"), "every worker loads the shadow")
        assert set(_send_split(both, _rows(generate_batch(NEED, seed=60, start_id=80_000)), "j")) == {"2"}
    wait_for(lambda: _recorded(w, v) >= NEED, 30, what="evidence")
    run_pending(s, w["defs"], w["instance"], echo=_quiet)
    # passed live: the shadow ends, the champion stays until a person approves, who sees the evidence
    assert champion_version(s, "churn") == 2 and staging.staged(s, "churn") is None
    assert _tags(w, v)[gate_tag(LIVE_CHECK)] == "passed"
    assert audit.read(s.model_dir("churn"))[-1].kind == "await"
    status = _status_text(w)
    assert f"AWAITING APPROVAL: v{v} (manual) passed the gate; live: v{v} matches champion v2 on" in status, status
    code, said = _cli(w, "approve", "--model", "churn")
    assert code == 0, said
    assert champion_version(s, "churn") == v
    last = audit.read(s.model_dir("churn"))[-1]
    assert last.moved and last.to == v and last.reason.startswith("approved by "), last


def test_with_approval_a_canary_is_approved_first_and_rolled_back_by_a_person(w):
    champion = champion_version(w["settings"], "churn")
    _reconfigure(w, f"deploy: {{strategy: canary, approval: required, canary: {{share: 0.5, min_requests: {NEED}}}}}\n")
    s = w["settings"]
    v = train_now(s, w["defs"], w["instance"], "churn", by="test", echo=_quiet).version
    # a canary answers clients: the person is asked before it starts
    assert staging.staged(s, "churn") is None and f"AWAITING APPROVAL: v{v} (manual)" in _status_text(w)
    code, said = _cli(w, "approve", "--model", "churn")
    assert code == 0 and f"v{v} staged as canary behind v{champion}" in said, said
    rows = _rows(generate_batch(200, seed=70, start_id=90_000))
    with _workers(w) as both:
        _on_every_worker(both, _staged_is(v, mode="canary"), "every worker routes the canary")
        got = _send_split(both, rows, "k")
        assert set(got) == {str(v), str(champion)}
        wait_for(lambda: _recorded(w, v) >= NEED, 30, what="evidence")

        # kill -9 of the judging process after the verdict, before the move: not promoted, the
        # champion and the canary's share as they were
        r = cli_env(w, {**os.environ, "ML_PLATFORM_FAULT": "stage:judged"}, "run")
        assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
        assert champion_version(s, "churn") == champion and staging.staged(s, "churn")["version"] == v
        assert audit.read_intent(s.model_dir("churn")) is None
        assert _send_split(both, rows[:40], "l") == got[:40]

    # kill -9 of the endpoint (both workers) during the canary: the restart resumes it from the
    # recorded state (same share, same sticky answers, the count going on), nothing promoted
    seen = _recorded(w, v)
    os.killpg(w["endpoint"].pid, signal.SIGKILL)
    w["endpoint"].wait(10)
    w["endpoint"] = _serve(w)
    kept = _recorded(w, v)
    assert kept >= seen >= NEED and f"v{v} in canary behind v{champion}: {kept}/{NEED} requests" in _status_text(w)
    with _workers(w) as both:
        _on_every_worker(both, _staged_is(v, mode="canary", share=0.5), "every restarted worker resumes the canary")
        assert _send_split(both, rows[:40], "l2") == got[:40]
        wait_for(lambda: _recorded(w, v) >= kept + got[:40].count(str(v)), 30, what="the count goes on")
        assert champion_version(s, "churn") == champion and staging.staged(s, "churn")["version"] == v

        # `ml-platform rollback` during the canary rolls the release back: 100 % on the champion
        code, said = _cli(w, "rollback", "--model", "churn")
        assert code == 0 and f"v{v}'s canary rolled back: every request on champion v{champion}" in said, said
        assert champion_version(s, "churn") == champion and staging.staged(s, "churn") is None
        _on_every_worker(both, lambda m: m["staged"] is None, "every worker drops the canary")
        assert set(_send_split(both, rows, "m")) == {str(champion)}
    assert _tags(w, v)[gate_tag(LIVE_CHECK)] == "failed"
    assert "rolled back by cli during its canary" in _tags(w, v)[gate_reason_tag(LIVE_CHECK)]
    refusal = audit.read(s.model_dir("churn"))[-1]
    assert refusal.kind == "refuse" and refusal.candidate == v and refusal.to == champion


def test_a_person_rejecting_a_candidate_in_shadow_ends_the_shadow_at_once(w):
    _reconfigure(w, DEPLOY)  # shadow, no approval: left alone it runs until its evidence is in
    s = w["settings"]
    champion = champion_version(s, "churn")
    v = train_now(s, w["defs"], w["instance"], "churn", by="test", echo=_quiet).version
    rec = staging.staged(s, "churn")
    assert rec["version"] == v
    # the UI tells how to stop it: deployed_model's staging observation
    obs = w["instance"].fetch_observations(dg.AssetKey(["churn", "deployed_model"]), limit=1).records[0]
    md = obs.event_log_entry.asset_observation.metadata
    assert md["stop it"].value.startswith("`ml-platform reject --model churn --reason ...`"), md
    rows = _rows(generate_batch(20, seed=80, start_id=95_000))
    with _workers(w) as both:
        _on_every_worker(both, _staged_is(v, mode="shadow"), "every worker loads the shadow")
        assert set(_send_split(both, rows, "n")) == {str(champion)}
        wait_for(lambda: _recorded(w, v) >= len(rows), 30, what="evidence")
        # no --version: the candidate in shadow; the stage ends now, not when its evidence is in
        code, said = _cli(w, "reject", "--model", "churn", "--by", "dana", "--reason", "not before the audit")
        ended = f"shadow of v{v} ended: every request on v{champion}"
        assert code == 0 and f"v{v} rejected by dana; the champion stays; {ended}" in said, said
        assert staging.staged(s, "churn") is None and champion_version(s, "churn") == champion
        _on_every_worker(both, lambda m: m["staged"] is None, "every worker stops mirroring")
        assert set(_send_split(both, rows, "o")) == {str(champion)}
    assert not _rows_per_worker(w, v, "o-")  # nothing mirrored to it after the reject
    during = f"during its shadow ({len(rows)}/{NEED} requests): not before the audit"
    tags = _tags(w, v)
    assert tags["approval"] == "rejected" and tags[gate_tag(LIVE_CHECK)] == "failed", tags
    assert tags[gate_reason_tag(LIVE_CHECK)] == f"rejected by dana (cli) {during}"
    # the UI's live_shadow check shows it too, beside the judged evaluations
    check = dg.AssetCheckKey(dg.AssetKey(["churn", "candidate_model"]), LIVE_CHECK)
    shown = w["instance"].event_log_storage.get_asset_check_execution_history(check, limit=1)[0]
    evaluation = shown.event.dagster_event.event_specific_data
    assert not evaluation.passed and evaluation.metadata["Verdict"].value == f"refused: rejected by dana (cli) {during}"
    last = audit.read(s.model_dir("churn"))[-1]
    assert (last.kind, last.candidate, last.to, last.actor) == ("reject", v, champion, "dana (cli)"), last
    assert last.reason == f"rejected v{v} {during}" and last.endpoint == ended, last
    status = _status_text(w)
    assert f"champion: v{champion}" in status and "in shadow behind" not in status, status
    # a `reject` killed after its decision, before the stage ended, leaves the pointer: the next look
    # refuses it with the person's reason, without judging its evidence
    model_store(s).stage("churn", rec)
    out = staging.judge_and_conclude(s, registry_for(s), None, "churn", actor="test")
    assert out.state == "refused" and out.reason.startswith(f"v{v} was rejected by dana at "), out.reason
    assert staging.staged(s, "churn") is None and champion_version(s, "churn") == champion
    code, said = _cli(w, "approve", "--model", "churn", "--version", str(v))
    assert code == 1 and "rejected by dana" in said, said
