"""`ml_platform.yaml` -> typed settings: the one source of truth for every layer.

Only ``models`` (and in each model its columns and task) is required; every other key has a
default. Each field's ``description`` is its documentation: docs/configuration.md is generated
from them (``python -m ml_platform.config_reference --write``). Errors name the key path and
what was expected, e.g. ``ml_platform.yaml: models.churn.features.age.type: expected
'numeric' or 'categorical' (got 'int')``.
"""

from ml_platform.settings.base import CONFIG_ENV, DEFAULT_CONFIG_NAME, MODEL_NAME, ConfigError
from ml_platform.settings.cron import cron_problem
from ml_platform.settings.estimator import ESTIMATOR_PARAMS, EstimatorConfig
from ml_platform.settings.features import FeatureSpec
from ml_platform.settings.loading import config_path, load_settings
from ml_platform.settings.model import ModelConfig
from ml_platform.settings.platform import (
    CeleryConfig,
    PostgresConfig,
    ScaleOutConfig,
    ServingConfig,
    Settings,
    UIConfig,
)
from ml_platform.settings.project import (
    COMPONENT_TYPE,
    ComponentAttributes,
    component_files,
    component_models,
    defs_folder,
    is_dg_project,
)
from ml_platform.settings.sections import (
    AutomationConfig,
    CanaryConfig,
    DeployConfig,
    DriftConfig,
    GateConfig,
    LandingConfig,
    LiveCheckConfig,
    RetrainConfig,
    ShadowConfig,
    SliceConfig,
    SourceConfig,
    TrainingConfig,
    ValidationConfig,
)

__all__ = [
    "AutomationConfig",
    "COMPONENT_TYPE",
    "CONFIG_ENV",
    "CanaryConfig",
    "CeleryConfig",
    "ComponentAttributes",
    "ConfigError",
    "DEFAULT_CONFIG_NAME",
    "DeployConfig",
    "DriftConfig",
    "ESTIMATOR_PARAMS",
    "EstimatorConfig",
    "FeatureSpec",
    "GateConfig",
    "LandingConfig",
    "LiveCheckConfig",
    "MODEL_NAME",
    "ModelConfig",
    "PostgresConfig",
    "RetrainConfig",
    "ScaleOutConfig",
    "ServingConfig",
    "Settings",
    "ShadowConfig",
    "SliceConfig",
    "SourceConfig",
    "TrainingConfig",
    "UIConfig",
    "ValidationConfig",
    "component_files",
    "component_models",
    "config_path",
    "cron_problem",
    "defs_folder",
    "is_dg_project",
    "load_settings",
]
