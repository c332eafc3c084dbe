"""MLflow tracking + model registry, as a Dagster resource that also works as a plain object
(the CLI's `status` and `rollback` use it outside any run).

Aliases, not stages: ``challenger`` marks the newest candidate, ``champion`` what serves.
Gate verdicts, trigger and promotion are model-version tags, so MLflow's own UI and
tools see the same story as `ml-platform status`.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from dagster import ConfigurableResource

from ml_platform.core import files, version_files
from ml_platform.core.compute import one_thread
from ml_platform.core.version_files import VersionFiles
from ml_platform.names import (
    BACKTEST_BATCHES_PARAM,
    BACKTEST_METRIC_PREFIX,
    MLFLOW_DAGSTER_RUN,
    VERSION_CHECK_ONLY,
    VERSION_CODE,
    VERSION_CODE_MANIFEST,
    VERSION_PLATFORM_COMMIT,
    VERSION_PROJECT_COMMIT,
    VERSION_PROJECT_DIRTY,
    gate_reason_tag,
    gate_tag,
)
from ml_platform.resources.registry_view import summary_metrics

# on the registry version as well as the run: what the code-change retrain and `status` read
# (the check mark first: a version is never seen with its code version but without it)
VERSION_CODE_TAGS = (
    VERSION_CHECK_ONLY,
    VERSION_CODE,
    VERSION_CODE_MANIFEST,
    VERSION_PROJECT_COMMIT,
    VERSION_PROJECT_DIRTY,
)


def _pip_requirements() -> list[str]:
    # Explicit: MLflow would otherwise infer them by inspecting the environment on every
    # log_model, which takes seconds per candidate.
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("scikit-learn", "numpy", "pandas", "scipy", "skops")]


def git_commit() -> str:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
            ).stdout.strip()
            or "unknown"
        )
    except Exception:  # noqa: BLE001 - no git, not a checkout: the commit is unknown
        return "unknown"


class MlflowRegistry(ConfigurableResource):
    tracking_uri: str
    artifact_root: str

    def client(self):
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        if self.tracking_uri.startswith("sqlite:///"):
            db = Path(self.tracking_uri.removeprefix("sqlite:///"))
            db.parent.mkdir(parents=True, exist_ok=True)
            if not db.exists() or not db.stat().st_size:
                # Two processes on a fresh store would both create the schema: one at a time.
                with files.file_lock(db.with_name(f".{db.name}.create.lock"), what="MLflow's creation lock"):
                    client.search_experiments(max_results=1)
                    client.search_registered_models(max_results=1)
        return client

    def experiment_id(self, model: str) -> str:
        c = self.client()
        exp = c.get_experiment_by_name(model)
        if exp is not None:
            return exp.experiment_id
        Path(self.artifact_root).mkdir(parents=True, exist_ok=True)
        try:
            return c.create_experiment(model, artifact_location=Path(self.artifact_root, model).as_uri())
        except Exception:  # noqa: BLE001 - created concurrently by another run
            return c.get_experiment_by_name(model).experiment_id

    def _start_run(self, model: str, parent_run_id: str | None, run_name: str | None):
        """A run in the model's experiment; nested under ``parent_run_id`` (the retrain's run,
        dagster-mlflow's) when given, in the parent's experiment."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        if parent_run_id is None:
            return mlflow.start_run(experiment_id=self.experiment_id(model), run_name=run_name)
        exp_id = self.client().get_run(parent_run_id).info.experiment_id
        return mlflow.start_run(experiment_id=exp_id, run_name=run_name, nested=True, parent_run_id=parent_run_id)

    def log_trial(
        self,
        model: str,
        *,
        params: dict,
        metrics: dict,
        tags: dict,
        run_name: str,
        parent_run_id: str | None = None,
        backtest: dict | None = None,
    ) -> str:
        """A candidate that was fitted and judged but not registered: params, holdout metrics and
        its backtest (``_log_backtest``)."""
        import mlflow

        with self._start_run(model, parent_run_id, run_name) as run:
            mlflow.log_params(params)
            mlflow.log_metrics({f"holdout_{k}": v for k, v in metrics.items()})
            _log_backtest(backtest)
            mlflow.set_tags(tags)
        return run.info.run_id

    def log_candidate(
        self,
        model: str,
        pipe,
        files: VersionFiles,
        *,
        params: dict,
        metrics: dict,
        tags: dict,
        input_sample,
        batches: dict,
        parent_run_id: str | None = None,
        run_tags: dict | None = None,
        run_name: str | None = None,
        config: dict | None = None,
        backtest: dict | None = None,
    ) -> tuple[int, str]:
        """One MLflow run (params, metrics, the sklearn model, the version's files, the batch
        hashes) and a new registry version with alias ``challenger``. Returns (version, run_id).
        The version's files are logged under ``serving/``: the serving store can be rebuilt
        from the registry alone (``download_version_files``). ``tags`` go on the run and the
        version; ``run_tags`` on the run only."""
        import mlflow
        import skops.io
        from mlflow.models import infer_signature

        with self._start_run(model, parent_run_id, run_name or tags.get("dagster_run_id")) as run:
            mlflow.log_params(params)
            mlflow.log_metrics({f"holdout_{k}": v for k, v in metrics.items()})
            _log_backtest(backtest)
            # "dagster_run_id" stays off the run: dagster-mlflow finds the run it resumes by it.
            mlflow.set_tags(
                {
                    **{k: v for k, v in tags.items() if k != "dagster_run_id"},
                    **(run_tags or {}),
                    VERSION_PLATFORM_COMMIT: git_commit(),
                    "batch_count": str(len(batches)),
                }
            )
            untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipe))
            proba = hasattr(pipe, "predict_proba")
            with one_thread():
                out = pipe.predict(input_sample)
            info = mlflow.sklearn.log_model(
                pipe,
                name="model",
                serialization_format="skops",
                skops_trusted_types=untrusted,
                pip_requirements=_pip_requirements(),
                signature=infer_signature(input_sample, out),
                registered_model_name=model,
                pyfunc_predict_fn="predict_proba" if proba else "predict",
            )
            for name in version_files.REGISTRY_FILES:
                mlflow.log_artifact(str(files.dir / name), artifact_path=version_files.ARTIFACT_PATH)
            mlflow.log_dict(batches, "batches.json")  # batch -> sha256; a tag would be kilobytes
            if config is not None:  # the effective configuration the candidate was trained with
                mlflow.log_dict(config, "config.yaml")
        version = int(info.registered_model_version)
        c = self.client()
        c.set_registered_model_alias(model, "challenger", version)
        c.set_model_version_tag(model, str(version), "trigger", tags.get("trigger", "manual"))
        c.set_model_version_tag(model, str(version), "batch_count", str(len(batches)))
        for k in ("training_set", "dagster_run_id", "train_window", *VERSION_CODE_TAGS):
            if k in tags:
                c.set_model_version_tag(model, str(version), k, tags[k])
        return version, run.info.run_id

    def register_restored(self, model: str, files_dir: Path | None, tags: dict) -> int:
        """A registry version rebuilt from the serving store (``control/registry_rebuild``): one
        run logging the files in ``files_dir`` under ``serving/`` (none: a placeholder for a
        number that was registered but never published), then a version from it. MLflow numbers
        it: the next free number. Returns that number."""
        c = self.client()
        run = c.create_run(self.experiment_id(model), run_name=f"restored {tags.get('restored_version', '')}")
        if files_dir is not None:
            c.log_artifacts(run.info.run_id, str(files_dir), artifact_path=version_files.ARTIFACT_PATH)
        c.set_terminated(run.info.run_id)
        try:
            c.create_registered_model(model)
        except Exception:  # noqa: BLE001 - it exists
            pass
        mv = c.create_model_version(
            model, f"{run.info.artifact_uri}/{version_files.ARTIFACT_PATH}", run_id=run.info.run_id, tags=tags
        )
        return int(mv.version)

    def download_version_files(
        self, model: str, version: int, dest: VersionFiles, need: tuple = version_files.REGISTRY_FILES
    ) -> VersionFiles:
        """The version's files from the registry into ``dest`` (each moved into place whole);
        raises FileNotFoundError when one of ``need`` is not in the registry."""
        import mlflow

        mv = self.version(model, version)
        dest.dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.dir) as d:
            got = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=mv.run_id,
                    artifact_path=version_files.ARTIFACT_PATH,
                    dst_path=d,
                    tracking_uri=self.tracking_uri,
                )
            )
            for name in version_files.REGISTRY_FILES:
                if (got / name).is_file():
                    (got / name).replace(dest.dir / name)
                elif name in need:
                    raise FileNotFoundError(
                        f"{model} v{version}: {name} is not among the version's "
                        f"MLflow artifacts ({version_files.ARTIFACT_PATH}/)"
                    )
        return dest

    def version_batches(self, model: str, version: int) -> dict | None:
        """The batches the version trained on (its run's ``batches.json``: batch -> sha256), or
        None when the run has none."""
        import json

        import mlflow

        mv = self.version(model, version)
        with tempfile.TemporaryDirectory() as d:
            try:
                got = mlflow.artifacts.download_artifacts(
                    run_id=mv.run_id, artifact_path="batches.json", dst_path=d, tracking_uri=self.tracking_uri
                )
            except Exception:  # noqa: BLE001 - MLflow raises its own exception for a missing artifact
                return None
            return json.loads(Path(got).read_text())

    def running_runs(self, model: str) -> dict[str, str]:
        """MLflow runs of this model still RUNNING -> the Dagster run that opened them."""

        runs = self.client().search_runs(
            [self.experiment_id(model)], max_results=200, filter_string="attributes.status = 'RUNNING'"
        )
        return {r.info.run_id: r.data.tags[MLFLOW_DAGSTER_RUN] for r in runs if MLFLOW_DAGSTER_RUN in r.data.tags}

    def end_runs_of(self, model: str, dagster_run_id: str) -> int:
        """Mark KILLED the MLflow runs a dead Dagster run left RUNNING (its parent and
        candidates): its worker could not end them. Returns how many."""
        c = self.client()
        mine = [m for m, d in self.running_runs(model).items() if d == dagster_run_id]
        for run_id in mine:
            c.set_terminated(run_id, status="KILLED")
        return len(mine)

    def gate_verdicts(self, model: str, version: int, checks: Iterable[str]) -> dict[str, tuple[str, str]]:
        """check -> (state, reason) as the gate recorded it on the version ("missing" if never)."""
        tags = self.version(model, version).tags
        return {c: (tags.get(gate_tag(c), "missing"), tags.get(gate_reason_tag(c), "")) for c in checks}

    def set_version_tags(self, model: str, version: int, tags: dict) -> None:
        c = self.client()
        for k, v in tags.items():
            c.set_model_version_tag(model, str(version), k, str(v))

    def version(self, model: str, version: int):
        return self.client().get_model_version(model, str(version))

    def champion_alias(self, model: str) -> int | None:
        """The version behind alias ``champion``: a MIRROR of the serving store's pointer
        (``promotion.champion_version`` is the accessor every reader uses)."""
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client().get_model_version_by_alias(model, "champion").version)
        except MlflowException:
            return None

    def set_champion_alias(self, model: str, version: int | None) -> None:
        from mlflow.exceptions import MlflowException

        if version is not None:
            self.client().set_registered_model_alias(model, "champion", version)
            return
        try:
            self.client().delete_registered_model_alias(model, "champion")
        except MlflowException:
            pass

    def versions(self, model: str) -> list:
        from mlflow.exceptions import MlflowException

        try:
            vs = self.client().search_model_versions(f"name = '{model}'", max_results=10_000)
        except MlflowException as e:
            if files.storage_fault(e) is not None:  # locked, disk full: not "no versions" (a lost registry)
                raise
            return []
        return sorted(vs, key=lambda v: int(v.version))

    def run_seconds(self, run_id: str) -> float | None:
        """Wall time of the retrain that produced a version: the Dagster run's MLflow run (the
        parent of every candidate it fitted) from start to end; the version's own run when it has
        no parent; None while it has not ended."""
        client = self.client()
        run = client.get_run(run_id)
        parent = run.data.tags.get("mlflow.parentRunId")
        info = client.get_run(parent).info if parent else run.info
        if not info.end_time or not info.start_time:
            return None
        return max(0.0, (info.end_time - info.start_time) / 1000)

    def run_metrics(self, run_id: str) -> dict:
        return summary_metrics(self.client().get_run(run_id).data.metrics)


def registry_for(settings) -> MlflowRegistry:
    return MlflowRegistry(tracking_uri=settings.tracking_uri, artifact_root=str(settings.artifact_root))


def _log_backtest(backtest: dict | None) -> None:
    """A candidate's backtest in the active run: ``{"metric", "batches", "values", "mean", "low",
    "high"}`` -> ``backtest_<metric>`` one step per scored batch (NaN where it was not scored),
    its mean and interval, and the batches as a param."""
    import math

    import mlflow

    if not backtest:
        return
    key = f"{BACKTEST_METRIC_PREFIX}{backtest['metric']}"
    for step, v in enumerate(backtest["values"]):
        if v is not None and math.isfinite(v):
            mlflow.log_metric(key, v, step=step)
    mlflow.log_metrics(
        {
            f"{key}_{k}": backtest[k]
            for k in ("mean", "low", "high")
            if backtest.get(k) is not None and math.isfinite(backtest[k])
        }
    )
    mlflow.log_param(BACKTEST_BATCHES_PARAM, ", ".join(backtest["batches"]))
