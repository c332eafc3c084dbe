"""The Celery app of `ml-platform worker` (`celery -A ml_platform.cli.celery_app worker` works too).

dagster-celery's own tasks (a run = one ``execute_job`` task, run by the CeleryRunLauncher that
the generated dagster.yaml names), built with the broker and settings of ``scale_out.celery``.
Each run is tagged with the worker that took it (host:pid), which is how the control-plane
sensor knows on which host a dead PID may be judged, and how a person sees who ran what.
"""

from __future__ import annotations

from celery.signals import task_prerun
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task

from ml_platform.runtime import scale_out
from ml_platform.runtime.instance import prepare_environment
from ml_platform.settings import load_settings

settings = load_settings()
if not scale_out.enabled(settings):
    raise SystemExit(f"{settings.source}: scale_out.celery is not configured: there is nothing for a worker to do")
prepare_environment(settings)  # DAGSTER_HOME, the config path, the PostgreSQL password (env only)

_c = settings.scale_out.celery
app = make_app(
    app_args={
        "broker": _c.broker_url,
        "backend": _c.backend_url or _c.broker_url,
        "config_source": scale_out.celery_app_config(settings),
    }
)
app.conf.update(scale_out.celery_app_config(settings))
# Import the code location now, before the first task, so that the first run does not pay
# the imports (seconds of CPU) inside itself (benchmarks/README.md, scale-out).
import ml_platform.defs.location  # noqa: E402,F401

execute_job = create_execute_job_task(app)
resume_job = create_resume_job_task(app)


@task_prerun.connect
def _tag_run(sender=None, kwargs=None, **_):
    from dagster import DagsterInstance
    from dagster._serdes import unpack_value

    packed = (kwargs or {}).get("execute_job_args_packed")
    if packed is None:
        return
    run_id = unpack_value(packed).run_id
    with DagsterInstance.get() as instance:
        instance.add_run_tags(run_id, scale_out.worker_tags())
