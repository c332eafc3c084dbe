"""Inputs as users make them (issue 20), on a real Dagster instance with a real MLflow store,
driven like `ml-platform run`: stray and foreign labels, column names with spaces and
punctuation, a truncated batch record, a champion pointer lost under `serve`."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
import unicodedata

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ml_platform.cli import main as cli
from ml_platform.control.champion import registry_loss
from ml_platform.control.runner import run_pending, train_now
from ml_platform.control.status import status
from ml_platform.core import audit
from ml_platform.core.simulate import generate_batch
from ml_platform.defs.definitions import build_definitions
from ml_platform.resources.registry import registry_for
from ml_platform.serving.app import create_app
from ml_platform.serving.store import ModelStore
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import dagster_instance, write_config
from ml_platform_tests.e2e import warm
from ml_platform_tests.serving.conftest import TestClient, records

CHECKS = {"min_metric", "not_worse_than_champion", "per_slice", "onnx_parity", "latency_budget"}


def _land(landing, name, df, age):
    p = landing / name
    df.to_csv(p, index=False)
    t = time.time() - age
    os.utime(p, (t, t))
    return p


def _quiet(*_):
    return None


# --------------------------------------------------------------------------------- labels
@pytest.fixture(scope="module")
def labels_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    write_config(root, extra="training: {window_batches: 1}\nretrain: {policy: on_arrival}\n")
    s = load_settings(root / "ml_platform.yaml")
    landing = s.landing_dir("churn")
    defs = build_definitions(s)
    (root / "dagster_home").mkdir()
    with dagster_instance(root / "dagster_home") as instance:
        _land(landing, "good-1.csv", generate_batch(1500, seed=10), age=700)
        first = run_pending(s, defs, instance, echo=_quiet)["churn"]
        stray = generate_batch(1500, seed=14, start_id=20_000)
        stray.loc[:29, "churned"] = 2  # one stray label value on 30 rows
        foreign = generate_batch(600, seed=15, start_id=30_000)
        foreign["churned"] = foreign["churned"].map({0: "stay", 1: "leave"})  # another vocabulary
        _land(landing, "stray-label.csv", stray, age=300)
        _land(landing, "stay-leave.csv", foreign, age=200)
        later = run_pending(s, defs, instance, echo=_quiet)["churn"]
        yield {"settings": s, "defs": defs, "instance": instance, "first": first, "later": later}


def test_a_stray_label_is_quarantined_and_retraining_goes_on(labels_world):
    assert labels_world["first"][0].train.version == 1 and labels_world["first"][0].train.deployed
    by_file = {os.path.basename(o.file): o for o in labels_world["later"]}
    o = by_file["stray-label.csv"]
    assert o.status == "validated" and o.quarantined_rows == 30 and o.rows == 1470
    s = labels_world["settings"]
    q = pd.read_parquet(s.model_dir("churn") / "quarantine" / f"{o.partition}.parquet")
    assert q["_row"].tolist() == list(range(1, 31))
    assert (q["_reason"] == "churned: not a class of models.churn.target (0, 1) (got 2)").all()
    # the retrain on that batch alone is a binary model the gate lets through (was: 3 classes, roc_auc nan)
    t = o.train
    assert t is not None and t.version == 2 and t.deployed, t
    assert {c for c, _, _ in t.gate} == CHECKS and all(p for _, p, _ in t.gate), t.gate
    meta = ModelStore(s.serving_dir).read("churn", 2)[1]
    assert meta["classes"] == [0, 1]


def test_labels_of_another_vocabulary_refuse_the_batch_naming_them(labels_world):
    o = {os.path.basename(o.file): o for o in labels_world["later"]}["stay-leave.csv"]
    assert o.status == "failed" and o.train is None
    assert "labels in 'churned' (models.churn.target) are not its classes 0, 1" in o.reason
    assert "'stay' (" in o.reason and "'leave' (" in o.reason
    batches = status(labels_world["settings"], labels_world["defs"].resources["ml_platform_registry"])
    assert ModelStore(labels_world["settings"].serving_dir).current("churn")["version"] == 2, batches


def test_a_truncated_batch_record_is_skipped_naming_its_file(labels_world, capsys, caplog):
    from ml_platform.core import catalog

    s = labels_world["settings"]
    o = labels_world["later"][0]
    path = s.model_dir("churn") / "batches" / f"{o.partition}.json"
    whole = path.read_text()
    before = catalog.read_record(s.model_dir("churn"), o.partition).decision
    path.write_text(whole[: len(whole) // 2])  # a disk fault truncated it
    try:
        with caplog.at_level("WARNING", logger="ml_platform.catalog"):
            assert cli.main(["--config", str(s.source), "status", "--json"]) == 0
        assert str(path) in caplog.text
        assert '"churn"' in capsys.readouterr().out
        # `run` ingests the file again into the same partition (the same content), which rebuilds
        # the record; its retrain decision comes back from its train run's tags. Was: left without
        # one, and counted as a retrain in flight for every later batch (retraining stopped).
        out = run_pending(s, labels_world["defs"], labels_world["instance"], echo=_quiet)["churn"]
        assert [b for b in out if b.kind == "batch"] == []  # nothing decided again, nothing re-trained
        again = catalog.read_record(s.model_dir("churn"), o.partition)
        assert again.is_validated and again.sha256 == json.loads(whole)["sha256"], again
        assert again.decision.retrain and again.decision.run_id == before.run_id, again.decision
        assert again.decision.trigger == before.trigger
    finally:
        path.write_text(whole)


def test_wrongly_typed_records_and_corrupt_state_files_are_skipped_naming_them(labels_world, capsys, caplog):
    """D11/D12: a batch record with `"status": 5` does not crash `status`; a corrupt audit line (or,
    D1 of the re-run, one with a field of the wrong type: `"at": null`), payoff_train_seconds.json
    and live-sample lines are skipped with a warning naming the file (and line); the rest is read."""
    from ml_platform.core.live import read_window

    s = labels_world["settings"]
    mdir = s.model_dir("churn")
    batches = mdir / "batches"
    good = json.loads(next(iter(sorted(batches.glob("*.json")))).read_text())
    wrong = batches / "hand-edited.json"
    wrong.write_text(json.dumps({**good, "partition": "hand-edited", "status": 5}))
    audit_file, cache = mdir / "audit.jsonl", mdir / "payoff_train_seconds.json"
    kept_audit, kept_cache = audit_file.read_bytes(), cache.read_bytes() if cache.exists() else None
    n = len(kept_audit.splitlines())
    # D1: a mistyped field (`"at": null`, `"at": 5`) is a corrupt line too, not a crash of `status`
    audit_file.write_bytes(kept_audit + b'{"at": "torn\n[1, 2]\n{"at": null}\n{"at": 5, "to": 2}\n')
    cache.write_text("{not json")
    samples = s.live_samples_dir / "churn"
    samples.mkdir(parents=True, exist_ok=True)
    sample = samples / "live-20990101T000000-1.jsonl"
    sample.write_bytes(b'{"_version": 2, "_ts": "t", "age": 3}\nnot json\n[]\n')
    try:
        with caplog.at_level("WARNING"):
            assert cli.main(["--config", str(s.source), "status", "--json"]) == 0
            doc = json.loads(capsys.readouterr().out)
            win = read_window(samples, 2, ["age"], 100, score_column="_score")
        assert "hand-edited" not in json.dumps(doc["models"]["churn"]["batches"])
        assert f"{wrong} is unreadable (TypeError: status is 5, expected a string or null)" in caplog.text
        assert f"{audit_file}: line {n + 1} is not an audit entry" in caplog.text, caplog.text
        assert f"{audit_file}: line {n + 2} is not an audit entry" in caplog.text, caplog.text
        assert f"{audit_file}: line {n + 3} is not an audit entry (TypeError: at is null, expected a string)" in (
            caplog.text
        ), caplog.text
        assert f"{audit_file}: line {n + 4} is not an audit entry (TypeError: at is 5, expected a string)" in (
            caplog.text
        ), caplog.text
        assert len(doc["models"]["churn"]["audit"]) >= 2  # the good entries are read
        assert cli.main(["--config", str(s.source), "status"]) == 0  # the table (it sliced "at")
        assert "audit (champion moves" in capsys.readouterr().out
        assert f"{cache}: unreadable (JSONDecodeError): ignored and rebuilt" in caplog.text, caplog.text
        assert f"{sample}: line(s) 2, 3 not a JSON object: skipped" in caplog.text, caplog.text
        assert len(win.frame) == 1 and win.unreadable_lines == 2
    finally:
        wrong.unlink()
        sample.unlink()
        audit_file.write_bytes(kept_audit)
        if kept_cache is None:
            cache.unlink(missing_ok=True)
        else:
            cache.write_bytes(kept_cache)


def test_a_pointer_lost_under_serve_keeps_serving_and_is_rebuilt(labels_world):
    s = labels_world["settings"]
    store = ModelStore(s.serving_dir)
    row = records(generate_batch(1, seed=3), list(s.models["churn"].features))[0]
    with TestClient(create_app(s.serving_dir, ["churn"], poll_seconds=3600)) as c:
        store.pointer_path("churn").unlink()
        assert c.post("/admin/reload").json()["models"]["churn"]["serving_version"] == 2
        r = c.post("/models/churn/invocations", json={"dataframe_records": [row]})
        assert r.status_code == 200 and r.headers["x-model-version"] == "2"
        ready = c.get("/v2/health/ready")
        assert ready.status_code == 503 and "current.json is missing" in ready.json()["models"]["churn"]["reason"]
        # what `ml-platform serve` does while it runs: the lost pointer is rebuilt (registry + audit)
        assert cli._lost_pointers(s) == ["churn"]
        cli._repair_before_serving(s, cli._lost_pointers(s))
        assert store.current("churn")["version"] == 2 and cli._lost_pointers(s) == []
        assert audit.read(s.model_dir("churn"))[-1].kind == "repair"
        assert c.post("/admin/reload").json()["models"]["churn"]["status"] == "unchanged"
        assert c.get("/v2/health/ready").status_code == 200


def test_a_lost_registry_is_reported_never_replaced_by_a_fresh_one(labels_world, capsys):
    s, defs, inst = labels_world["settings"], labels_world["defs"], labels_world["instance"]
    db = s.storage / "mlflow" / "mlflow.db"
    kept = db.with_name("mlflow.db.kept")
    db.rename(kept)  # the MLflow database deleted
    try:
        assert cli.main(["--config", str(s.source), "status"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("status refused: churn: the MLflow registry at sqlite:///") and str(db) in err
        assert "champion v2" in err and "registered: none" in err
        assert not db.exists()  # status created no empty registry
        out = train_now(s, defs, inst, "churn", by="test", echo=_quiet)
        assert out.version is None and "champion v2" in out.error and str(db) in out.error
        assert not db.exists()
        # ... and `ml-platform train` says it once, as its last line (it printed it twice)
        capsys.readouterr()
        assert cli.main(["--config", str(s.source), "train", "--model", "churn"]) == 1
        said = capsys.readouterr()
        assert (said.out + said.err).count("does not hold what the serving store knows") == 1, said
        assert said.err.startswith("train failed: refused: churn: the MLflow registry at sqlite:///"), said.err
        assert not db.exists()
        # D5: `run` reports the loss as the named error, creates no registry, does not crash
        assert cli.main(["--config", str(s.source), "run"]) == 1
        out = capsys.readouterr().out
        assert "[churn] run refused: churn: the MLflow registry at sqlite:///" in out, out
        assert "`ml-platform reconcile --rebuild-registry`" in out and "churn: refused" in out, out
        assert not db.exists()
        # D2 (re-run): nor do a person's moves (each asked MLflow first, which created an empty registry)
        for cmd, says in (
            ("rollback", "rollback failed"),
            ("approve", "approve refused"),
            ("reject", "reject refused"),
        ):
            assert cli.main(["--config", str(s.source), cmd]) == 1, cmd
            err = capsys.readouterr().err
            assert err.startswith(f"{says}: churn: the MLflow registry at sqlite:///"), err
            assert err.count("\n") == 1 and "`ml-platform reconcile --rebuild-registry`" in err, err
            assert not db.exists(), cmd
        # ... nor do `up`'s sensors or `serve`'s start-up repair (each would have created it)
        for sensor in ("churn_retrain_sensor", "churn_code_change_sensor", "churn_control_plane_sensor"):
            tick = defs.resolve_sensor_def(sensor)(dg.build_sensor_context(instance=inst, definitions=defs))
            assert isinstance(tick, dg.SkipReason) and not db.exists(), (sensor, tick)
        cli._repair_before_serving(s)
        assert "[serve] churn: no repair: churn: the MLflow registry at" in capsys.readouterr().err
        assert not db.exists()
        # a registry that exists but was replaced (empty), seen by new processes (this one
        # caches MLflow's SQLite connections): the same refusal
        uri = s.tracking_uri
        make = f"from mlflow import MlflowClient; MlflowClient({uri!r}, {uri!r}).search_registered_models()"
        subprocess.run([sys.executable, "-c", make], check=True, capture_output=True)
        assert db.exists()
        res = warm.run(["--config", s.source, "status"], cwd=s.source.parent)
        assert res.returncode == 1 and "champion v2" in res.stderr and "registered: none" in res.stderr, res.stderr
        # The documented repair without a backup: the store's versions re-registered, same numbers.
        published = ModelStore(s.serving_dir).versions("churn")
        res = warm.run(["--config", s.source, "reconcile", "--rebuild-registry"], cwd=s.source.parent)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "v2 re-registered from the serving store (gate verdicts from the audit)" in res.stdout, res.stdout
        res = warm.run(["--config", s.source, "status", "--json"], cwd=s.source.parent)
        assert res.returncode == 0, res.stderr[-2000:]
        versions = {v["version"]: v for v in json.loads(res.stdout)["models"]["churn"]["versions"]}
        assert set(range(1, max(published) + 1)) <= set(versions), sorted(versions)
    finally:
        db.unlink(missing_ok=True)
        kept.rename(db)
    assert registry_loss(s, registry_for(s), "churn") is None
    assert ModelStore(s.serving_dir).current("churn")["version"] == 2


def test_a_dangling_pointer_is_the_pointers_fault_and_the_rebuild_adds_nothing(labels_world):
    """D2: a champion pointer naming a version never published is not blamed on the registry,
    and `reconcile --rebuild-registry` registers no placeholders into an intact registry: the
    pointer is repaired (to the MLflow alias), naming it."""
    s = labels_world["settings"]
    store = ModelStore(s.serving_dir)
    before = sorted(int(v.version) for v in registry_for(s).versions("churn"))
    ptr = json.loads(store.pointer_path("churn").read_text())
    store.pointer_path("churn").write_text(json.dumps({**ptr, "version": 9, "onnx": "v9.onnx", "meta": "v9.json"}))
    assert registry_loss(s, registry_for(s), "churn") is None
    res = warm.run(["--config", s.source, "reconcile", "--rebuild-registry"], cwd=s.source.parent)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    assert "named v9, which was never published nor registered: the pointer was wrong" in res.stdout, res.stdout
    assert "placeholder" not in res.stdout and "re-registered" not in res.stdout, res.stdout
    assert sorted(int(v.version) for v in registry_for(s).versions("churn")) == before
    assert store.current("churn")["version"] == ptr["version"] == 2


def test_a_locked_registry_is_one_line_naming_it(labels_world, capsys, monkeypatch):
    """D3 (re-run): the MLflow database held by another connection (`BEGIN EXCLUSIVE`, as the
    `sqlite3` shell does): `status` and `train` each end in one line naming the registry file and
    the lock, exit 1, no traceback (was: sqlalchemy's traceback, or "training failed: None")."""
    import types

    from mlflow.store.db import utils as mlflow_db

    from ml_platform.core import files
    from ml_platform.resources import registry_view

    s = labels_world["settings"]
    # Both wait for the lock first (status 30 s, MLflow 20 s a session): 0.2 s here
    monkeypatch.setattr(registry_view, "BUSY_TIMEOUT_SECONDS", 0.2)
    text = mlflow_db.sql.text
    quick = types.SimpleNamespace(text=lambda q: text(q.replace("busy_timeout = 20000", "busy_timeout = 200")))
    monkeypatch.setattr(mlflow_db, "sql", quick)
    holder = sqlite3.connect(s.storage / "mlflow" / "mlflow.db", timeout=0, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    want = (
        f"error: the MLflow registry ({s.tracking_uri}) is locked by another process (database is locked): "
        "try again once that process is done"
    )
    try:
        for cmd in ("status", "train"):
            assert cli.main(["--config", str(s.source), cmd]) == 1, cmd
            err = capsys.readouterr().err
            assert err.splitlines()[-1] == want and "Traceback" not in err, err
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        files.last_failure(s.storage, clear=True)
    assert cli.main(["--config", str(s.source), "status"]) == 0


def test_a_registry_deleted_while_train_runs_ends_in_one_line_naming_it(labels_world, capfd, monkeypatch):
    """D4 (re-run): mlflow.db deleted while `train` fits (was: 864 lines, 7 tracebacks, a last line
    naming neither the registry nor the repair): each failed step is one line, and the last line
    is the lost registry's refusal, naming the file and `ml-platform reconcile --rebuild-registry`."""
    from ml_platform.runtime import faults

    s = labels_world["settings"]
    db = s.storage / "mlflow" / "mlflow.db"
    kept = db.with_name("mlflow.db.before-train")
    real = faults.point

    def delete_while_fitting(name: str) -> None:
        if name == "train:fitting":
            shutil.copy(db, kept)
            db.unlink()  # SQLite's open connections now write to a deleted file
        real(name)

    monkeypatch.setattr(faults, "point", delete_while_fitting)
    try:
        assert cli.main(["--config", str(s.source), "train"]) == 1
        cap = capfd.readouterr()
        last = cap.err.strip().splitlines()[-1]
        assert last.startswith("train failed: the MLflow registry was lost during the run: churn: the MLflow "), last
        assert str(db) in last and "`ml-platform reconcile --rebuild-registry`" in last, last
        assert "Traceback" not in cap.err + cap.out and len(cap.err.splitlines()) < 25, cap.err
    finally:
        db.unlink(missing_ok=True)
        kept.rename(db)
    assert registry_loss(s, registry_for(s), "churn") is None


# --------------------------------------------------------------------------- column names
ODD = {
    "tenure months": "{type: numeric, min: 0}",
    "plan/type": "{type: categorical}",
    "x.y": "{type: numeric}",
    "x_y": "{type: numeric}",
    "région (€)": "{type: categorical}",
}


def _nfd(name: str) -> str:
    return unicodedata.normalize("NFD", name)


def _odd_batch(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "row_id": np.arange(seed * 100_000, seed * 100_000 + n),
            "tenure months": rng.integers(0, 72, n).astype(float),
            "plan/type": rng.choice(["basic", "plus", "pro"], n),
            "x.y": rng.normal(size=n).round(3),
            "x_y": rng.normal(size=n).round(3),
            "région (€)": rng.choice(["nord", "sud", "est"], n),
        }
    )
    score = 1.5 * df["x.y"] - df["tenure months"] / 24 + (df["plan/type"] == "pro") - df["x_y"] + 1
    df["churned"] = (score + rng.normal(0, 0.5, n) > 0).astype(int)
    return df


@pytest.fixture(scope="module")
def odd_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    features = "".join(f'      "{c}": {spec}\n' for c, spec in ODD.items())
    (root / "ml_platform.yaml").write_text(
        textwrap.dedent("""\
        storage_dir: state
        serving: {host: 127.0.0.1, port: 8080, poll_seconds: 0.5}
        models:
          odd:
            landing_dir: landing
            target: churned
            task: classification
            id_column: row_id
            training: {window_batches: 1}
            retrain: {policy: on_arrival}
            gate: {slices: [{feature: "plan/type", threshold: 0.6}]}
            features:
        """)
        + features
    )
    (root / "landing").mkdir()
    s = load_settings(root / "ml_platform.yaml")
    defs = build_definitions(s)
    (root / "dagster_home").mkdir()
    with dagster_instance(root / "dagster_home") as instance:
        _land(s.landing_dir("odd"), "odd-1.csv", _odd_batch(1500, 1), age=100)
        out = run_pending(s, defs, instance, echo=_quiet)["odd"]
        yield {"settings": s, "out": out, "defs": defs, "instance": instance}


def test_column_names_as_users_write_them_train_pass_the_gate_and_serve(odd_world):
    s = odd_world["settings"]
    t = odd_world["out"][0].train
    assert t is not None and t.version == 1, odd_world["out"]
    assert {c for c, _, _ in t.gate} == CHECKS and all(p for _, p, _ in t.gate), t.gate  # onnx_parity ran
    assert t.deployed
    rows = records(_odd_batch(3, 9), ["row_id", *ODD])
    with TestClient(create_app(s.serving_dir, ["odd"], poll_seconds=3600)) as c:
        r = c.post("/models/odd/invocations", json={"dataframe_records": rows})
        assert r.status_code == 200, r.text
        assert len(r.json()["predictions"]) == 3 and r.headers["x-model-version"] == "1"
        # D7: the same names typed decomposed (NFD: `e` + U+0301) are the same columns, same answers
        nfd = [{_nfd(k): v for k, v in row.items()} for row in rows]
        for body in (
            {"dataframe_records": nfd},
            {"dataframe_records": nfd[:1]},
            {"dataframe_split": {"columns": list(nfd[0]), "data": [list(row.values()) for row in nfd]}},
            {"inputs": {k: [row[k] for row in nfd] for k in nfd[0]}},
        ):
            got = c.post("/models/odd/invocations", json=body)
            assert got.status_code == 200, (body, got.text)
            n = len(got.json()["predictions"])
            assert got.json()["predictions"] == r.json()["predictions"][:n], body
        inputs = [
            {"name": k, "shape": [3], "datatype": "BYTES" if type(v) is str else "FP64", "data": [x[k] for x in nfd]}
            for k, v in nfd[0].items()
            if k != "row_id"
        ]
        v2 = c.post("/v2/models/odd/infer", json={"inputs": inputs})
        assert v2.status_code == 200, v2.text
        both = c.post("/models/odd/invocations", json={"dataframe_records": [{**nfd[0], "région (€)": "sud"}]})
        assert both.status_code == 400 and "appears twice" in both.text, both.text
    # ... and in `ml-platform score`'s input
    src = s.storage / "nfd.csv"
    _odd_batch(50, 11).rename(columns=_nfd).to_csv(src, index=False)
    assert cli.main(["--config", str(s.source), "score", str(src), "--out", str(s.storage / "nfd.parquet")]) == 0
    assert len(pd.read_parquet(s.storage / "nfd.parquet")) == 50


# ------------------------------------------------------------------- failed ingests in `run`
def test_an_ingest_that_fails_after_validation_is_decided_at_once(odd_world, monkeypatch):
    """D3/D6: a batch whose ingest crashes after validation (here its drift report) is failed and
    decided at once, naming the step and the error; the batch after it is decided in the same
    `run` (was: nothing decided for STALE_INGEST_SECONDS, "0 batch(es)"), each verdict under its
    own file's name."""
    from ml_platform.core import drift

    s, defs, inst = odd_world["settings"], odd_world["defs"], odd_world["instance"]
    real, calls = drift.compute_drift_from_config, []

    def crash_once(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a gremlin in the drift report")
        return real(*a, **kw)

    monkeypatch.setattr(drift, "compute_drift_from_config", crash_once)
    _land(s.landing_dir("odd"), "crashes.csv", _odd_batch(800, 2), age=90)
    _land(s.landing_dir("odd"), "after.csv", _odd_batch(800, 3), age=80)
    lines: list[str] = []
    t0 = time.monotonic()
    out = {os.path.basename(o.file): o for o in run_pending(s, defs, inst, echo=lines.append)["odd"]}
    crashed = out["crashes.csv"]
    assert crashed.status == "failed" and crashed.train is None, crashed
    assert "drift_report failed: RuntimeError: a gremlin in the drift report" in crashed.reason, crashed.reason
    assert crashed.decision.startswith("no retrain (none): batch failed: drift_report failed"), crashed.decision
    after = out["after.csv"]
    assert after.status == "validated" and after.decision.startswith("retrain (arrival)"), after
    assert time.monotonic() - t0 < 300  # not the 600 s wait for a stale ingest
    verdicts = [ln for ln in lines if "valid rows" in ln]
    assert [ln.split()[1] for ln in verdicts] == ["crashes.csv:", "after.csv:"], lines


def test_run_prints_one_line_per_bad_file_and_no_dagster_traceback(odd_world, capfd):
    """D7/D13: expected batch failures print one line naming the file and why, no stack trace;
    random bytes are "not a readable CSV or Parquet file", not "a header but no rows"."""
    s = odd_world["settings"]
    landing = s.landing_dir("odd")
    (landing / "random.csv").write_bytes(bytes([0x8A, 0x01, 0x7F, 0x1B, 0x93, 0x41, 0x0B] * 40))
    (landing / "header-only.csv").write_text("row_id,churned\n")
    for p in (landing / "random.csv", landing / "header-only.csv"):
        os.utime(p, (time.time() - 60, time.time() - 60))
    assert cli.main(["--config", str(s.source), "run"]) == 0
    cap = capfd.readouterr()
    assert "Stack Trace" not in cap.err and "Traceback" not in cap.err and "STEP_FAILURE" not in cap.err, cap.err
    assert "random.csv: failed: 0 valid rows, 0 quarantined - " in cap.out, cap.out
    assert "random.csv: not a readable CSV or Parquet file" in cap.out, cap.out
    assert "header-only.csv: has a header but no rows" in cap.out, cap.out
    assert "odd: 2 batch(es) (2 failed: " in cap.out, cap.out


def test_yes_no_labels_of_a_0_1_target_are_mapped_on_every_path(odd_world):
    """D16: a batch whose 0/1 target says yes/no, True/False, y/n in any case is validated as 0/1
    (the champion's classes): the champion's measured performance and the concept check are
    computed on it, and the retrain it triggers is a binary 0/1 model the gate lets through."""
    s, defs, inst = odd_world["settings"], odd_world["defs"], odd_world["instance"]
    df = _odd_batch(1200, 5)
    words = {1: ["yes", "TRUE", "Y", "t"], 0: ["no", "False", "n", "F"]}
    df["churned"] = [words[v][i % 4] for i, v in enumerate(df["churned"])]
    # D7 (re-run): its header spells `région (€)` decomposed (NFD), as some editors save it
    _land(s.landing_dir("odd"), "yes-no.csv", df.rename(columns=_nfd), age=30)
    out = {os.path.basename(o.file): o for o in run_pending(s, defs, inst, echo=_quiet)["odd"]}
    o = out["yes-no.csv"]
    assert o.status == "validated" and o.quarantined_rows == 0 and o.rows == 1200, o
    from ml_platform.core import catalog

    rec = catalog.read_record(s.model_dir("odd"), o.partition)
    assert rec.single_class is None and rec.labelled
    valid = pd.read_parquet(rec.validated_path)
    assert sorted(set(map(str, valid["churned"]))) == ["0", "1"]
    assert "région (€)" in valid.columns and valid["région (€)"].notna().all()
    assert rec.measured_value is not None and rec.measured_value > 0.6, rec.performance  # roc_auc on 0/1
    assert "p_value" in rec.concept_check, rec.performance
    t = o.train
    assert t is not None and all(p for _, p, _ in t.gate), t
    assert ModelStore(s.serving_dir).read("odd", t.version)[1]["classes"] == [0, 1]
