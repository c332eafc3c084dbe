"""Candidate selection and dagster-mlflow on a real Dagster instance and a real MLflow store:
a retrain after drift fits every window as a child MLflow run nested under the Dagster run's
own MLflow run (dagster-mlflow's), registers the best, keeps every artifact under the
platform's storage (no ./mlruns), and a click in the UI (candidate_model materialized with no
sensor tags, in-process and through `dagster asset materialize`)
chooses the same windows as the sensor's retrain."""

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from ml_platform.control.runner import run_pending
from ml_platform.core.simulate import generate_batch
from ml_platform.defs.definitions import build_definitions
from ml_platform.names import MLFLOW_DAGSTER_RUN as TAG_DAGSTER_RUN
from ml_platform.names import MLFLOW_DAGSTER_URL as TAG_DAGSTER_URL
from ml_platform.names import TAG_REGIME_START
from ml_platform.runtime.instance import prepare_environment
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import write_config

CANDIDATE = dg.AssetKey(["churn", "candidate_model"])
TRAINING_SET = dg.AssetKey(["churn", "training_set"])


def _land(landing: Path, name: str, df, age: float) -> None:
    p = landing / name
    df.to_csv(p, index=False)
    t = time.time() - age
    os.utime(p, (t, t))


def _materialization(instance, run_id):
    ev = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    return next(
        e.event_log_entry.asset_materialization
        for e in ev
        if e.event_log_entry.asset_materialization.asset_key == CANDIDATE
    )


def _windows(mat) -> list[str]:
    return [r.data["window"] for r in mat.metadata["candidates"].records]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("candidates")
    cwd = tmp_path_factory.mktemp("cwd")  # where the processes start: ./mlruns must not appear here
    write_config(root, extra="automation: {settle_seconds: 0}\ntraining: {min_regime_rows: 500}\n")
    settings = load_settings(root / "ml_platform.yaml")
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.chdir(cwd)
    prepare_environment(settings)
    landing = settings.landing_dir("churn")
    for i in range(3):
        _land(
            landing,
            f"b{i}.csv",
            generate_batch(1500, seed=70 + i, start_id=i * 10_000, start_time=_day(i)),
            age=600 - i,
        )
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.get()
    first = run_pending(settings, defs, instance, echo=lambda *_: None)["churn"]
    # Sudden concept drift: the champion's metric drops on the batch -> a retrain (the sensor's
    # decision and tags, `run_pending` applies the same policy).
    _land(landing, "b3.csv", generate_batch(1500, seed=73, drift=1.0, start_id=30_000, start_time=_day(3)), age=300)
    second = run_pending(settings, defs, instance, echo=lambda *_: None)["churn"]
    trains = [o.train for o in first + second if o.train]
    retrain = instance.get_runs(dg.RunsFilter(job_name="churn_train"), limit=1)[0]
    yield {
        "settings": settings,
        "defs": defs,
        "instance": instance,
        "root": root,
        "cwd": cwd,
        "trains": trains,
        "retrain": retrain,
        "registry": defs.resources["ml_platform_registry"],
    }
    instance.dispose()
    os.chdir(saved_cwd)
    os.environ.clear()
    os.environ.update(saved_env)


def _day(i):
    import pandas as pd

    return pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=i)


def test_the_sensor_path_retrained_after_drift_on_every_window(world):
    run = world["retrain"]
    print("retrain run tags:", dict(run.tags))
    assert run.tags.get("ml_platform/trigger") in ("drift", "performance"), run.tags
    mat = _materialization(world["instance"], run.run_id)
    windows = _windows(mat)
    print(
        "candidates:",
        [(r.data["window"], r.data["roc_auc"], r.data["winner"]) for r in mat.metadata["candidates"].records],
    )
    assert [w.split(" ")[0] for w in windows] == ["all", "newest", "regime"], windows
    assert mat.metadata["regime_start"].value.startswith("b3.csv"), mat.metadata["regime_start"]
    # The comparison is a real table (schema + records), one winner, the registered one.
    table = mat.metadata["candidates"]
    assert isinstance(table, dg.TableMetadataValue) and table.schema is not None
    assert [c.name for c in table.schema.columns][:3] == ["winner", "window", "estimator"]
    winners = [r.data for r in table.records if r.data["winner"]]
    assert len(winners) == 1 and winners[0]["window"] == mat.metadata["window"].value
    # The backtest's figures are columns: one per scored batch (the holdout last), the mean, its interval.
    cols = [c.name for c in table.schema.columns]
    scored = [c for c in cols if c.startswith("backtest ")]
    assert (
        scored and scored[-1] == "backtest holdout" and {"backtest_mean", "backtest_low", "backtest_high"} <= set(cols)
    )
    full = [r.data for r in table.records if all(r.data[c] != "" for c in scored)]
    note = mat.metadata["selection"].value
    assert (
        "prefer_more_data" in note
        or winners[0] not in full
        or winners[0]["backtest_mean"] == max(r["backtest_mean"] for r in full)
    ), (note, full)


def test_candidates_are_child_runs_of_the_dagster_runs_mlflow_run(world):
    import mlflow

    run, registry = world["retrain"], world["registry"]
    c = mlflow.MlflowClient(world["settings"].tracking_uri)
    exp = c.get_experiment_by_name("churn")
    parents = c.search_runs([exp.experiment_id], f"tags.dagster_run_id = '{run.run_id}'")
    assert len(parents) == 1, [p.info.run_name for p in parents]  # one MLflow run per Dagster run
    parent = parents[0]
    assert parent.info.status == "FINISHED", parent.info.status
    assert parent.data.tags[TAG_DAGSTER_URL].endswith(f"/runs/{run.run_id}")
    children = c.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    mat = _materialization(world["instance"], run.run_id)
    assert len(children) == len(mat.metadata["candidates"].records) == 3, [ch.info.run_name for ch in children]
    for ch in children:
        assert ch.data.tags[TAG_DAGSTER_RUN] == run.run_id and "dagster_run_id" not in ch.data.tags
        assert ch.data.params["window"] and "holdout_roc_auc" in ch.data.metrics
        assert "backtest_roc_auc_mean" in ch.data.metrics and ch.data.params["backtest_batches"].endswith("holdout")
        assert ch.info.status == "FINISHED"
    # The registered version is the winner's child run.
    version = mat.metadata["version"].value
    mv = registry.version("churn", version)
    winner = next(ch for ch in children if ch.data.tags.get("winner") == "true")
    assert mv.run_id == winner.info.run_id == mat.metadata["mlflow_run_id"].value
    assert winner.data.params["window"] == mat.metadata["window"].value == mv.tags["train_window"]
    # Readable tags: none of kilobytes on the runs or the version.
    for tags in [parent.data.tags, mv.tags] + [ch.data.tags for ch in children]:
        big = {k: len(v) for k, v in tags.items() if len(v) > 500}
        assert not big, big


def test_artifacts_stay_under_the_platform_storage(world):
    import mlflow

    s = world["settings"]
    c = mlflow.MlflowClient(s.tracking_uri)
    exp = c.get_experiment_by_name("churn")
    root = s.artifact_root.resolve().as_uri()
    assert exp.artifact_location.startswith(root), exp.artifact_location
    for r in c.search_runs([exp.experiment_id]):
        assert r.info.artifact_uri.startswith(root), r.info.artifact_uri
    assert not (world["cwd"] / "mlruns").exists() and not (world["root"] / "mlruns").exists()
    assert not list(Path(world["cwd"]).iterdir()), list(Path(world["cwd"]).iterdir())


def test_a_ui_click_after_drift_chooses_the_sensors_windows(world):
    """Materialize training_set + candidate_model in the UI after the drifted batch landed."""
    inst = world["instance"]
    sensor_mat = _materialization(inst, world["retrain"].run_id)
    job = world["defs"].resolve_implicit_global_asset_job_def()
    # No tags at all; the gate may block the candidate (a check failure fails the run): the
    # windows are what this test is about.
    res = job.execute_in_process(instance=inst, asset_selection=[TRAINING_SET, CANDIDATE], raise_on_error=False)
    run = inst.get_run_by_id(res.run_id)
    assert TAG_REGIME_START not in run.tags and "ml_platform/trigger" not in run.tags
    mat = _materialization(inst, res.run_id)
    assert _windows(mat) == _windows(sensor_mat), (_windows(mat), _windows(sensor_mat))
    assert mat.metadata["regime_start"].value == sensor_mat.metadata["regime_start"].value


def test_dagster_asset_materialize_nests_candidates_under_the_runs_mlflow_run(world):
    """Dagster's own CLI (as a UI click): the Dagster run's MLflow run is found by each step,
    the candidates nest under it, and the run is ended."""
    import mlflow

    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "ML_PLATFORM_CONFIG")}
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
            "churn/training_set,churn/candidate_model",
        ],
        cwd=world["root"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    inst = world["instance"]
    run = inst.get_runs(dg.RunsFilter(job_name="__ASSET_JOB"), limit=1)[0]
    failed = [e.step_key for e in inst.all_logs(run.run_id) if e.is_dagster_event and e.dagster_event.is_step_failure]
    # Only a gate check may fail (the candidate after drift may miss the floor); never a training step.
    assert all("candidate_model_" in k for k in failed), (failed, (r.stdout + r.stderr)[-3000:])
    c = mlflow.MlflowClient(world["settings"].tracking_uri)
    exp = c.get_experiment_by_name("churn")
    parents = c.search_runs([exp.experiment_id], f"tags.dagster_run_id = '{run.run_id}'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", [
        (p.info.run_name, p.info.status) for p in parents
    ]
    children = c.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    assert len(children) == 3 and all(ch.data.tags[TAG_DAGSTER_RUN] == run.run_id for ch in children)
    assert _windows(_materialization(inst, run.run_id)) == _windows(_materialization(inst, world["retrain"].run_id))
    assert not (world["root"] / "mlruns").exists()
