"""The code-change sensor reads the model's files on disk each tick (tester2 finding 4): under
`up` the code server imports the project once, and a changed estimator param or transform must
retrain without "Reload definitions". Evaluated against a real instance and MLflow store; the
definitions built once stand for the code server, definitions built again for the run worker."""

import os
import time

import dagster as dg

from ml_platform import names
from ml_platform.control.chain import Chain
from ml_platform.control.code_on_disk import stale_import
from ml_platform.control.runner import run_pending
from ml_platform.core.simulate import generate_batch
from ml_platform.defs.definitions import build_definitions
from ml_platform.names import VERSION_CODE
from ml_platform.resources.registry import registry_for
from ml_platform.runtime import console
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import dagster_instance, write_config

EXTRA = """\
training: {window_batches: 1}
retrain: {policy: on_arrival}
transform: disk_feats:engineer
estimator: {class: sklearn.ensemble.ExtraTreesClassifier, params: {n_estimators: 20}}
"""
TRANSFORM = "def engineer(df):\n    return df.copy()\n"


def _tick(defs, instance, cursor):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    out = defs.resolve_sensor_def("churn_code_change_sensor")(ctx)
    return out, ctx.cursor


def test_a_change_on_disk_retrains_without_a_reload_and_an_unused_file_does_not(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "disk_feats.py").write_text(TRANSFORM)
    (tmp_path / "unused.py").write_text("X = 1\n")
    cfg = write_config(tmp_path, extra=EXTRA)
    s = load_settings(cfg)
    server = build_definitions(s)  # the code server: imported once, never reloaded below
    (tmp_path / "home").mkdir()
    with dagster_instance(tmp_path / "home") as instance:
        batch = s.landing_dir("churn") / "b1.csv"
        generate_batch(1500, seed=3).to_csv(batch, index=False)
        os.utime(batch, (time.time() - 600, time.time() - 600))  # settled
        run_pending(s, server, instance, echo=lambda *_: None)
        reg = registry_for(s)
        loaded = reg.version("churn", 1).tags[VERSION_CODE]

        tick, cursor = _tick(server, instance, None)
        assert isinstance(tick, dg.SkipReason) and "no code retrain" in tick.skip_message, tick
        tick, cursor = _tick(server, instance, cursor)
        assert f"code version {loaded} already compared with champion v1" in tick.skip_message, tick

        # a file the model does not use: the same code version, nothing to do
        (tmp_path / "unused.py").write_text("X = 2\n")
        tick, cursor = _tick(server, instance, cursor)
        assert "already compared" in tick.skip_message, tick

        # half-edited config: said, not retrained, compared again once it loads
        text = cfg.read_text()
        cfg.write_text(text.replace("n_estimators: 20", "n_estimators: [20"))
        tick, cursor = _tick(server, instance, cursor)
        assert "do not load" in tick.skip_message and str(cfg) in tick.skip_message, tick

        # the user's edit (tester2: n_estimators), never reloaded into `server`
        cfg.write_text(text.replace("n_estimators: 20", "n_estimators: 30"))
        req, cursor = _tick(server, instance, cursor)
        assert isinstance(req, dg.RunRequest), req
        assert req.tags[names.TAG_TRIGGER] == "code" and "changed: estimator" in req.tags[names.TAG_REASON], req
        new = req.run_key.split("-")[1]
        assert new != loaded

        # a process that imported the code before the change (a long-lived worker) refuses to train it
        stale = console.quiet_refusals(server.resolve_job_def(names.train_job("churn"))).execute_in_process(
            instance=instance, raise_on_error=False, run_config=console.run_config(), tags=req.tags
        )
        assert not stale.success
        failure = next(e for e in stale.all_events if e.event_type_value == "STEP_FAILURE")
        assert f"this process imported code version {loaded}" in str(failure.event_specific_data.error), failure
        assert len(reg.versions("churn")) == 1

        # the run worker imports the files as they are now and records the code it trained
        worker = build_definitions(load_settings(cfg))
        res = console.quiet_refusals(worker.resolve_job_def(names.train_job("churn"))).execute_in_process(
            instance=instance, raise_on_error=False, run_config=console.run_config(), tags=req.tags
        )
        assert res.success
        newest = max(reg.versions("churn"), key=lambda v: int(v.version))
        assert newest.tags[VERSION_CODE] == new, newest.tags
        tick, cursor = _tick(server, instance, cursor)
        assert isinstance(tick, dg.SkipReason), tick  # this code has its candidate: no second retrain

        # a change to the transform's module source retrains too, naming it
        (tmp_path / "disk_feats.py").write_text(TRANSFORM + "SCALE = 1\n")
        req, cursor = _tick(server, instance, cursor)
        assert isinstance(req, dg.RunRequest) and "transform" in req.tags[names.TAG_REASON], req

        # a half-saved module (inspect hashes it all the same) or an unreadable config: said, not retrained
        chain = Chain("churn", s.models["churn"], s)
        (tmp_path / "disk_feats.py").write_text(TRANSFORM + "SCALE = (\n")
        tick, cursor = _tick(server, instance, cursor)
        assert isinstance(tick, dg.SkipReason), tick
        assert f"do not load (compared once they do): {tmp_path / 'disk_feats.py'}:3: not valid Python" in (
            tick.skip_message
        ), tick
        assert stale_import(chain, "x") is None  # a train run started meanwhile fails on the import, no traceback
        (tmp_path / "disk_feats.py").write_text(TRANSFORM + "SCALE = 1\n")
        text = cfg.read_text()
        cfg.write_bytes(b"\xff" + text.encode())
        tick, cursor = _tick(server, instance, cursor)
        assert f"do not load (compared once they do): {cfg}: not UTF-8 text" in tick.skip_message, tick
        assert stale_import(chain, "x") is None
        cfg.write_text(text)
        tick, cursor = _tick(server, instance, cursor)
        assert "already compared" in tick.skip_message, tick

        # a new gate check changes the train job's steps: the loaded job cannot run it, so it says to reload
        (tmp_path / "unused.py").write_text("def my_check(candidate, champion, rows):\n    return True\n")
        cfg.write_text(cfg.read_text() + "    gate: {checks: ['unused:my_check']}\n")
        tick, _ = _tick(server, instance, cursor)
        assert isinstance(tick, dg.SkipReason) and "Reload definitions" in tick.skip_message, tick
