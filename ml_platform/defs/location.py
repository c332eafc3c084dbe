"""The code location `ml-platform up`, `dagster dev -w workspace.yaml` and Celery workers load
when the models come from ml_platform.yaml: the Definitions of the configuration in
``ML_PLATFORM_CONFIG`` (or ./ml_platform.yaml). Only this module reads the configuration at import.

Every run executes its steps in its run worker's process (the UI's clicks and backfills too): the
steps are small, and a process per step would re-import sklearn, MLflow and Dagster (seconds of
CPU each). Scale-out spreads runs over Celery workers, not steps."""

import dagster as dg

from ml_platform.defs.definitions import build_definitions
from ml_platform.settings import load_settings

defs = dg.Definitions.merge(build_definitions(load_settings()), dg.Definitions(executor=dg.in_process_executor))
