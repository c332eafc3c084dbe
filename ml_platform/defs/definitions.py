"""The platform's Definitions: one asset chain (+ checks, jobs, sensors, schedule) per model.

``build_definitions`` is the Python entry point for a user's own Dagster project
(``dg.Definitions.merge(my_defs, build_definitions(load_settings(...)))``): its resources use
namespaced keys (``names.RESOURCE_*``), it forces no executor on the user's assets (the platform's
own jobs carry theirs), and each model's automation sensor targets that model's assets only.
"""

from __future__ import annotations

import importlib
import warnings

import dagster as dg

from ml_platform import names
from ml_platform.control.chain import Chain
from ml_platform.core import estimators
from ml_platform.defs.assets.deploy import build_deployed_model
from ml_platform.defs.assets.ingest import build_raw_batch, build_raw_batch_from_asset, build_validated_batch
from ml_platform.defs.assets.live import build_live_drift
from ml_platform.defs.assets.monitoring import build_batch_predictions, build_champion_performance, build_drift_report
from ml_platform.defs.assets.payoff import build_payoff
from ml_platform.defs.assets.training import build_candidate_model, build_training_set
from ml_platform.defs.checks import build_gate_checks
from ml_platform.defs.jobs import build_jobs
from ml_platform.defs.sensors import build_schedules, build_sensors
from ml_platform.resources.endpoint import endpoint_for
from ml_platform.resources.registry import registry_for
from ml_platform.resources.tracking import tracking_resource
from ml_platform.runtime import console
from ml_platform.runtime.instance import project_root_module
from ml_platform.settings import ConfigError, Settings

warnings.filterwarnings("ignore", message=console.QUIET_WARNING, category=dg.BetaWarning)  # see there


def build_definitions(settings: Settings) -> dg.Definitions:
    """Every configured model's definitions (see the module docstring)."""
    return dg.Definitions.merge(*(build_model_definitions(settings, name) for name in settings.models))


def load_definitions(settings: Settings) -> dg.Definitions:
    """What the CLI's runs execute: a `dg` project's own Definitions (its assets, an upstream
    ``source`` among them, next to its ModelComponents' chains), else ``build_definitions``."""
    if settings.project is None:
        return build_definitions(settings)
    module = importlib.import_module(f"{project_root_module(settings.project)}.definitions")
    defs = getattr(module, "defs", None)
    if defs is not None and not isinstance(defs, dg.Definitions) and callable(defs):
        defs = defs()  # a @dg.definitions function
    if not isinstance(defs, dg.Definitions):
        raise ConfigError(f"{module.__file__}: expected `defs`, a dagster Definitions (or a @dg.definitions function)")
    graph = defs.get_repository_def().asset_graph
    for name, cfg in settings.models.items():
        if cfg.source is not None and not graph.has(dg.AssetKey(cfg.source.asset.split("/"))):
            raise ConfigError(
                f"{settings.origin(name)}.source.asset: no asset {cfg.source.asset!r} in {module.__name__}"
            )
    return defs


def build_model_definitions(settings: Settings, name: str) -> dg.Definitions:
    """One model's chain: what a ``ModelComponent`` contributes to a project."""
    bad = estimators.problems(settings.models[name])
    if bad:  # reported where the definitions load, not as a crash in a later step
        raise ConfigError(f"{settings.origin(name)}.{bad[0]}" + "".join(f"; {b}" for b in bad[1:]))
    chain = Chain(name, settings.models[name], settings)
    assets = [
        build_raw_batch(chain) if chain.cfg.source is None else build_raw_batch_from_asset(chain),
        build_validated_batch(chain),
        build_batch_predictions(chain),
        build_drift_report(chain),
        build_champion_performance(chain),
        build_training_set(chain),
        build_candidate_model(chain),
        build_deployed_model(chain),
        build_live_drift(chain),
        build_payoff(chain),
    ]
    jobs = build_jobs(chain)
    sensors = build_sensors(chain, [j for j in jobs if j.name in (names.ingest_job(name), names.train_job(name))])
    # Without a declared automation-condition sensor, deployed_model's eager condition never
    # fires: a candidate materialized on its own (a UI click) would never deploy.
    automation = dg.AutomationConditionSensorDefinition(
        names.automation_sensor(name),
        target=dg.AssetSelection.key_prefixes([name]),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=5,
        run_tags=names.AUTOMATION_RUN_TAGS,
    )
    return dg.Definitions(
        assets=assets,
        asset_checks=build_gate_checks(chain),
        jobs=jobs,
        sensors=[*sensors, automation],
        schedules=build_schedules(chain),
        resources=platform_resources(settings),
        # every job's console log, in run workers too: a gate refusal reads as its verdicts
        loggers=console.LOGGERS,
    )


_RESOURCES: dict[tuple, dict] = {}


def platform_resources(settings: Settings) -> dict:
    """The platform's resources under their namespaced keys: the same objects for the same
    storage and endpoint, so the definitions of several models (components) merge."""
    key = (
        settings.tracking_uri,
        str(settings.artifact_root),
        settings.endpoint_url,
        settings.ui.host,
        settings.ui.port,
    )
    if key not in _RESOURCES:
        _RESOURCES[key] = {
            names.RESOURCE_REGISTRY: registry_for(settings),
            names.RESOURCE_ENDPOINT: endpoint_for(settings),
            names.RESOURCE_MLFLOW: tracking_resource(settings),
            # the instance's storage folder, as Dagster's default IO manager uses it
            names.RESOURCE_IO: dg.FilesystemIOManager(),
        }
    return _RESOURCES[key]
