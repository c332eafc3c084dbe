"""MLflow tracking of training runs through dagster-mlflow: its ``mlflow_tracking`` resource
(one MLflow run per Dagster run, resumed by every step of that run) and its
``end_mlflow_on_run_finished`` hook (ends the MLflow run after the job's last op).

The resource is dagster-mlflow's own, fed per run with the config it reads. Two things it
cannot do from static config, done here before it starts:
- the experiment is the model's, and a Dagster run (a UI click included) names its model
  only in its tags or its asset selection;
- ``mlflow.set_experiment`` would create a missing experiment at MLflow's default artifact
  location (``./mlruns`` in the working directory): the registry creates it first, with its
  artifact location under the platform's storage.
The tracking URI comes from the platform's settings, never from run config (a PostgreSQL
URI may carry a password). The resource key is the platform's own (``names.RESOURCE_MLFLOW``,
so a user's project keeps ``mlflow``); dagster-mlflow's hook reads the key ``mlflow``, so
``end_mlflow_hooks`` does what it does under our key.
"""

from __future__ import annotations

import warnings

import dagster as dg

from ml_platform.names import (
    MLFLOW_DAGSTER_RUN,
    MLFLOW_DAGSTER_URL,
    MLFLOW_MODEL,
    RESOURCE_MLFLOW,
    TAG_MODEL,
    TAG_TRIGGER,
)
from ml_platform.resources.registry import registry_for
from ml_platform.settings import Settings


@dg.success_hook(name="end_mlflow_run_after_last_step", required_resource_keys={RESOURCE_MLFLOW})
def _end_on_success(context: dg.HookContext) -> None:
    # As dagster-mlflow's end_mlflow_on_run_finished: the MLflow run ends after the job's last op.
    last = context._step_execution_context.job_def.nodes_in_topological_order[-1].name  # noqa: SLF001
    if context.op.name == last:
        getattr(context.resources, RESOURCE_MLFLOW).end_run()


@dg.failure_hook(name="end_mlflow_run_on_failure", required_resource_keys={RESOURCE_MLFLOW})
def _end_on_failure(context: dg.HookContext) -> None:
    getattr(context.resources, RESOURCE_MLFLOW).end_run(status="FAILED")


def end_mlflow_hooks() -> set[dg.HookDefinition]:
    return {_end_on_success, _end_on_failure}


def model_of_run(run: dg.DagsterRun, settings: Settings) -> str:
    """The model a run trains: its ``ml_platform/model`` tag (the platform's jobs), else the
    first configured model among the assets it materializes (the UI's asset job)."""
    name = run.tags.get(TAG_MODEL)
    if name in settings.models:
        return name
    for key in sorted(run.asset_selection or (), key=lambda k: k.to_user_string()):
        if key.path[0] in settings.models:
            return key.path[0]
    return next(iter(settings.models))


def run_url(settings: Settings, run_id: str) -> str:
    host = "127.0.0.1" if settings.ui.host in ("0.0.0.0", "") else settings.ui.host
    return f"http://{host}:{settings.ui.port}/runs/{run_id}"


def link_tags(settings: Settings, run_id: str) -> dict[str, str]:
    """Short tags that link an MLflow run to its Dagster run (the note is the run's description
    in the MLflow UI, a clickable link). Set on every MLflow run of a Dagster run (parent and
    candidates); the children must not carry dagster-mlflow's own "dagster_run_id" tag: its
    resource finds the run to resume by that tag, and would resume a child."""
    url = run_url(settings, run_id)
    return {
        MLFLOW_DAGSTER_RUN: run_id,
        MLFLOW_DAGSTER_URL: url,
        "mlflow.note.content": f"Dagster run [{run_id}]({url})",
    }


class _InitContext:
    """The part of the init context dagster-mlflow reads, with the config chosen for this run."""

    def __init__(self, context: dg.InitResourceContext, config: dict):
        self.log = context.log
        self.dagster_run = context.dagster_run
        self.run_id = context.run_id
        self.resource_config = config


def tracking_resource(settings: Settings) -> dg.ResourceDefinition:
    @dg.resource(
        description="dagster-mlflow's mlflow_tracking: one MLflow run per Dagster run, in the "
        "model's experiment (artifacts under the platform's storage)"
    )
    def mlflow(context: dg.InitResourceContext):
        import mlflow as mlflow_module

        run = context.dagster_run
        model = model_of_run(run, settings)
        registry_for(settings).experiment_id(model)  # artifact location under storage, before set_experiment
        mlflow_module.set_tracking_uri(settings.tracking_uri)
        config = {
            "experiment_name": model,
            "mlflow_tracking_uri": None,
            "parent_run_id": None,
            "mlflow_run_id": None,
            "env": {},
            "env_to_tag": None,
            "extra_tags": {
                "mlflow.runName": f"{model} retrain {context.run_id[:8]}",
                MLFLOW_MODEL: model,
                "trigger": run.tags.get(TAG_TRIGGER, "manual"),
                **link_tags(settings, context.run_id),
            },
        }
        with warnings.catch_warnings():  # its "beta" warnings at import and on every step
            warnings.simplefilter("ignore")
            # Imported here, not at load: an ingest run's worker never uses MLflow (seconds of CPU).
            from dagster_mlflow import mlflow_tracking

            steps = mlflow_tracking.resource_fn(_InitContext(context, config))
            tracking = next(steps)
        yield tracking
        next(steps, None)  # its teardown: ends the MLflow run as FAILED if the step raised

    return mlflow
