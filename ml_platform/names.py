"""The platform's vocabulary, in one place: run tags, Dagster object names, MLflow tag keys and
the gate's check registry. Every module reads names from here; none spells one itself.

No imports from the rest of the package: every layer may import this module.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping

# ------------------------------------------------------------------ Dagster run tags
# Written by sensors, the CLI and the repair loop; read by assets, `status` and the runner.
TAG_SOURCE = "ml_platform/source_path"  # the landing file an ingest run copies (or "asset:<key>")
TAG_SOURCE_PARTITION = "ml_platform/source_partition"  # the upstream asset's partition a batch is
TAG_SOURCE_EVENT = "ml_platform/source_event"  # the storage id of the upstream materialization
TAG_SHA = "ml_platform/sha256"  # its content hash (exactly-once ingest)
TAG_ARRIVAL = "ml_platform/arrival"  # its mtime when the sensor saw it
TAG_TRIGGER = "ml_platform/trigger"  # why a train run exists (drift, schedule, manual, ...)
TAG_REASON = "ml_platform/reason"  # the retrain decision's reason, for people
TAG_BATCH = "ml_platform/batch"  # the batch whose decision a train run carries
TAG_REGIME_START = "ml_platform/regime_start"  # first batch of a drifted regime (train on it alone)
TAG_MODEL = "ml_platform/model"  # the model a job belongs to
TAG_LAUNCHED_BY = "ml_platform/launched_by"
TAG_APPROVED_BY = "ml_platform/approved_by"  # optional: who approves (the UI's Launchpad)
TAG_RETRY_OF = "ml_platform/retry_of"  # a run re-launched after its worker died
TAG_ATTEMPT = "ml_platform/attempt"
TAG_WORKER_DIED = "ml_platform/worker_died"
TAG_SALVAGED = "ml_platform/salvaged"  # a dead train run whose candidate was kept (no retrain)
TAG_WORKER = "ml_platform/worker"  # "<host>:<pid>" of the Celery worker that runs the run
TAG_WORKER_HOST = "ml_platform/worker_host"  # its host: a dead-PID check is only valid there
TAG_CHECK_ONLY = "ml_platform/check_only"  # a `ml-platform check` run: judge, never deploy
TAG_PARTITION = "dagster/partition"  # Dagster's own
TAG_RANGE_START = "dagster/asset_partition_range_start"  # Dagster's own: a run over several batches
TAG_RANGE_END = "dagster/asset_partition_range_end"  # (one partition per file, first to last)
TAG_FILES = "ml_platform/files"  # how many landing files a multi-file ingest run takes
TAG_PRIORITY = "dagster/priority"  # Dagster's own: the run queue dequeues higher values first
TAG_CELERY_PRIORITY = "dagster-celery/run_priority"  # the broker's task priority (dagster-celery)
TAG_CELERY_QUEUE = "dagster-celery/queue"  # the broker queue a run is sent to (dagster-celery)
# Train, deploy and rollback runs go ahead of a backlog of ingest runs: first out of Dagster's run
# queue, and (scale-out) into a broker queue of their own that every worker also consumes.
TRAIN_PRIORITY = 10
INGEST_PRIORITY = 0
CELERY_QUEUE = "dagster"  # dagster_celery's default queue: ingest and every other run
CELERY_TRAIN_QUEUE = "dagster_train"
TRAIN_RUN_TAGS = {TAG_PRIORITY: str(TRAIN_PRIORITY), TAG_CELERY_QUEUE: CELERY_TRAIN_QUEUE}

AUTOMATION_RUN_TAGS = {TAG_LAUNCHED_BY: "automation", **TRAIN_RUN_TAGS}  # deploys

# ------------------------------------------------------------------ MLflow tag keys
MLFLOW_DAGSTER_RUN = "ml_platform.dagster_run_id"  # on MLflow runs: the Dagster run that made them
MLFLOW_DAGSTER_URL = "ml_platform.dagster_run_url"
MLFLOW_MODEL = "ml_platform.model"
VERSION_TRIGGER = "trigger"  # on model versions
VERSION_PROMOTED = "promoted"  # "true" once it served, "false" once rolled back
VERSION_ROLLED_BACK = "rolled_back"
VERSION_TRAINING_SET = "training_set"
VERSION_DAGSTER_RUN = "dagster_run_id"
VERSION_CODE = "code_version"  # the hash of everything that shapes the candidate
VERSION_CODE_MANIFEST = "code_manifest"  # its parts (JSON): what changed, for a `code` retrain
VERSION_PROJECT_COMMIT = "project_git_commit"  # the user's project checkout (or the config's folder)
VERSION_PROJECT_DIRTY = "project_git_dirty"  # "true" when it had uncommitted changes
VERSION_PLATFORM_COMMIT = "platform_git_commit"
VERSION_CHECK_ONLY = "ml_platform.check"  # "true": trained by `ml-platform check`, never deployed
BACKTEST_METRIC_PREFIX = "backtest_"  # MLflow metrics of a candidate's backtest (core/backtest.py):
# backtest_<metric> one step per scored batch (oldest first, the holdout last), _mean, _low, _high
BACKTEST_BATCHES_PARAM = "backtest_batches"  # the scored batches, in step order
GATE_JUDGED_AGAINST = "gate.judged_against"
GATE_COMPARISON_PREFIX = "gate.comparison."
GATE_SLICES_FAILING = "gate.per_slice.failing"
VERSION_STAGED = "staged"  # "shadow" / "canary": loaded beside the champion, judged on live traffic


# ------------------------------------------------------------------ the platform's own columns
# Written beside a batch's (or a request's) columns in the frames and files the platform makes: a
# configured column of one of these names would be overwritten, so the config refuses them
# (settings/model.py), naming RESERVED_COLUMNS.
COL_ROW = "_row"  # quarantine: the row's line in its file; training set: its position in the batch
COL_REASON = "_reason"  # quarantine: why the row was set aside
COL_BATCH = "_batch"  # training set: the row's batch (partition key)
COL_HOLDOUT = "_holdout"  # training set: True for a holdout row
COL_SCORE = "__score__"  # the model's one-number output (drift reference, batch predictions)
COL_TS = "_ts"  # live sample and staging evidence: when the request was answered
COL_VERSION = "_version"  # live sample: the version that answered
COL_PREDICTION = "_prediction"  # live sample: its answer
COL_PROBABILITIES = "_probabilities"
COL_REQUEST = "_rid"  # staging evidence: the request's id, the row's id, the candidate's error
COL_ID = "_id"
COL_ERROR = "_error"
RESERVED_COLUMNS: tuple[str, ...] = (
    COL_ROW,
    COL_REASON,
    COL_BATCH,
    COL_HOLDOUT,
    COL_SCORE,
    COL_TS,
    COL_VERSION,
    COL_PREDICTION,
    COL_PROBABILITIES,
    COL_REQUEST,
    COL_ID,
    COL_ERROR,
)


def column_name(name):
    """The one spelling of a column name: Unicode NFC (``café`` typed as ``e`` + U+0301 is the
    ``café`` of the config). Applied to config names and at every input edge (batch files, `score`,
    endpoint requests); anything but a string is returned as it is (for the caller to refuse)."""
    if type(name) is str and not unicodedata.is_normalized("NFC", name):
        return unicodedata.normalize("NFC", name)
    return name


# ------------------------------------------------------------------ Dagster object names
def ingest_job(model: str) -> str:
    return f"{model}_ingest"


def train_job(model: str) -> str:
    return f"{model}_train"


def live_drift_job(model: str) -> str:
    return f"{model}_live_drift"


def rollback_job(model: str) -> str:
    return f"{model}_rollback"


def train_pool(model: str) -> str:
    """The concurrency pool of every step that trains or moves this model's champion: the
    instance runs pools at run granularity with limit 1, so train/deploy/rollback runs of one
    model are serialized whoever launches them (sensor, UI, backfill, CLI)."""
    return f"{model}_train"


ARCHIVE_DIR = "_archived"  # under a landing dir: ingested files moved there (landing.archive)
LANDING_INDEX = "landing_index.sqlite"  # under a model's storage: the landing sensor's file index
INGEST_CLAIMS = "ingest_claims.json"  # under a model's storage: files `ml-platform run` is ingesting now
# Held while `run` or the landing sensor looks at who took a file and takes it: that reads every
# batch record (milliseconds for tens of batches, seconds for thousands).
INGEST_CLAIMS_LOCK = ".ingest_claims.lock"
INGEST_LOCK = ".ingest.lock"  # under a model's storage: one `ml-platform run` ingests at a time
DECISION_LOCK = ".decisions.lock"  # under a model's storage: retrain decisions and their claims
CODE_CLAIM = "code_retrain_claim.json"  # under a model's storage: who retrains on a code change


def raw_copy_lock(partition: str) -> str:
    """Beside a partition's raw copy (``raw/<partition>``): held by the run that copies and records it."""
    return f".{partition}.lock"


def partitions(model: str) -> str:
    return f"{model}_batches"


def stage_job(model: str) -> str:
    """The live comparison of a staged candidate, then its promotion (``live_shadow`` + deploy)."""
    return f"{model}_stage"


def sensor(model: str, kind: str) -> str:
    """kind: landing | retrain | live_drift | control_plane | staging."""
    return f"{model}_{kind}_sensor"


def weekly_retrain_schedule(model: str) -> str:
    return f"{model}_weekly_retrain"


def step(model: str, asset: str) -> str:
    """The op name of a model's asset (``output_for_node``)."""
    return f"{model}__{asset}"


def automation_sensor(model: str) -> str:
    """The automation-condition sensor of one model's assets (never the user's own)."""
    return f"{model}_automation"


# Resource keys: namespaced, so a user's project keeps its own `mlflow`, `registry`, ...
RESOURCE_REGISTRY = "ml_platform_registry"
RESOURCE_ENDPOINT = "ml_platform_endpoint"
RESOURCE_MLFLOW = "ml_platform_mlflow"
RESOURCE_IO = "ml_platform_io_manager"  # the platform's asset values, whatever IO manager a project uses
# Dagster's own key for a job's console logger: the platform's (runtime/console.py) replaces it
CONSOLE_LOGGER = "console"

# ------------------------------------------------------------------ the gate's check registry
# The blocking checks every candidate must pass, in the order the UI shows them. `defs/checks.py`
# builds one asset check per name; every path to the champion (deploy, approve, rollback, the
# repair loop) and every reader (status, the ledger) asks `gate_checks` for the same list.
BUILTIN_GATE_CHECKS: tuple[str, ...] = (
    "min_metric",
    "not_worse_than_champion",
    "per_slice",
    "onnx_parity",
    "latency_budget",
)


# The live comparison of a staged candidate (``deploy.strategy: shadow | canary``): blocking, and
# last, since it needs every other check passed before the candidate is loaded beside the champion.
LIVE_CHECK = "live_shadow"


def gate_checks(cfg=None) -> tuple[str, ...]:
    """The blocking checks of a model: the built-in ones, then its own (``gate.checks``), then
    ``live_shadow`` when the model is staged before production (``deploy.strategy``)."""
    extra = tuple(getattr(getattr(cfg, "gate", None), "check_names", ()) or ())
    staged = getattr(getattr(cfg, "deploy", None), "strategy", "direct") != "direct"
    return BUILTIN_GATE_CHECKS + extra + ((LIVE_CHECK,) if staged else ())


def offline_checks(cfg=None) -> tuple[str, ...]:
    """The checks a train run judges (every one but the live comparison)."""
    return tuple(c for c in gate_checks(cfg) if c != LIVE_CHECK)


def approval_checks(cfg=None) -> tuple[str, ...]:
    """The checks that pass before a person is asked (``deploy.approval: required``). The approval
    comes right before the candidate first answers a client: a shadow never does, so it is asked
    after ``live_shadow``, with the live evidence in hand; a canary does, so before it (the
    approval lets it into the canary); direct: after the offline gate."""
    shadow = getattr(getattr(cfg, "deploy", None), "strategy", "direct") == "shadow"
    return gate_checks(cfg) if shadow else offline_checks(cfg)


def gate_tag(check: str) -> str:
    return f"gate.{check}"


def gate_reason_tag(check: str) -> str:
    return f"gate.{check}.reason"


def gate_passed(tags: Mapping[str, str], checks: Iterable[str]) -> bool | None:
    """True/False once every check recorded a verdict on the version, None before."""
    verdicts = [tags.get(gate_tag(c)) for c in checks]
    if any(v == "failed" for v in verdicts):
        return False
    if all(v == "passed" for v in verdicts):
        return True
    return None


def gate_failures(tags: Mapping[str, str], checks: Iterable[str]) -> list[str]:
    """One line per check that did not pass: "<check> <state> (<reason>)"."""
    out = []
    for c in checks:
        state = tags.get(gate_tag(c))
        if state != "passed":
            reason = tags.get(gate_reason_tag(c))
            out.append(f"{c} {state or 'not run'}" + (f" ({reason})" if reason else ""))
    return out
