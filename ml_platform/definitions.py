"""The one Definitions object: one asset chain (+ jobs, sensors, schedule) per configured model."""

from __future__ import annotations

import dagster as dg

from ml_platform.assets.common import Chain
from ml_platform.assets.deploy import build_deployed_model
from ml_platform.assets.ingest import build_raw_batch, build_validated_batch
from ml_platform.assets.live import build_live_drift
from ml_platform.assets.payoff import build_payoff
from ml_platform.assets.monitoring import build_batch_predictions, build_champion_performance, build_drift_report
from ml_platform.assets.training import build_candidate_model, build_training_set
from ml_platform.checks import build_gate_checks
from ml_platform.jobs import RUN_TAGS, build_jobs
from ml_platform.resources.endpoint import endpoint_for
from ml_platform.resources.registry import registry_for
from ml_platform.resources.tracking import tracking_resource
from ml_platform.sensors import build_schedules, build_sensors
from ml_platform.settings import Settings, load_settings


def build_definitions(settings: Settings) -> dg.Definitions:
    registry = registry_for(settings)
    assets, checks, jobs, sensors, schedules = [], [], [], [], []
    for name, cfg in settings.models.items():
        chain = Chain(name, cfg, settings)
        assets += [build_raw_batch(chain), build_validated_batch(chain), build_batch_predictions(chain),
                   build_drift_report(chain), build_champion_performance(chain), build_training_set(chain),
                   build_candidate_model(chain), build_deployed_model(chain), build_live_drift(chain),
                   build_payoff(chain)]
        checks += build_gate_checks(chain)
        chain_jobs = build_jobs(chain)
        jobs += chain_jobs
        sensors += build_sensors(chain, [j for j in chain_jobs if j.name in (f"{name}_ingest", f"{name}_train")])
        schedules += build_schedules(chain)
    # Without a declared automation-condition sensor, deployed_model's eager condition never
    # fires: a candidate materialized on its own (a UI click) would never deploy.
    sensors.append(dg.AutomationConditionSensorDefinition(
        "ml_platform_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=5, run_tags=RUN_TAGS))
    # Every run executes its steps in its run worker's process (the UI's clicks and backfills too):
    # the steps are small, and a process per step re-imports sklearn, MLflow and Dagster (3-5 s of
    # CPU each on 2 cores). Scale-out spreads runs over Celery workers, not steps.
    return dg.Definitions(
        assets=assets, asset_checks=checks, jobs=jobs, sensors=sensors, schedules=schedules,
        executor=dg.in_process_executor,
        resources={"registry": registry, "endpoint": endpoint_for(settings), "mlflow": tracking_resource(settings)},
    )


defs = build_definitions(load_settings())
