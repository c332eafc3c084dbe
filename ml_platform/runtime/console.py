"""The console log of every run: the in-process runs of `ml-platform run`, `train` and `check`,
and the run workers `up`'s daemon launches (the platform's jobs name this logger in their run
config: ``JOB_CONFIG`` says how, and which runs it does not reach).

Dagster's colored console logger, with two changes. The gate's refusal of a candidate is an
outcome, not a crash: the step failure a blocking check raises then (``DagsterAssetCheckFailedError``)
is not printed with its stack trace. In a run worker each check logs its verdict with its reason
and the refusal is one line; `run`/`train`/`check` print the verdicts in their own summary
(``run_config()``: ``verdicts: false``) and leave both out. Any other failure (a crashing check
included) is one line naming the error; its stack trace is in the run's events (the UI).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import dagster as dg

from ml_platform.names import CONSOLE_LOGGER

# Dagster warns about its own beta parameter `execution_type` when it converts check definitions as
# a repository loads (repository_data.get_asset_checks_defs_by_key): on every load, in every
# console, nothing a user can act on. defs/definitions.py filters it; `up` also puts it in its
# children's PYTHONWARNINGS (cli/up.child_env), since a dg project's defs folder loads inside
# warnings.catch_warnings, which drops that filter on the way out.
QUIET_WARNING = "Parameter `execution_type`"

GATE_REFUSAL = "DagsterAssetCheckFailedError"
# What a check logs (core/gate.verdict_line, after the candidate's version): left out where the
# command prints the verdicts itself
_VERDICT = re.compile(r"^v\d+ gate \S+: (PASS|FAIL) - ")


def is_gate_refusal(record: logging.LogRecord) -> bool:
    """The record of a step that failed only because blocking checks did not pass."""
    event = (getattr(record, "dagster_meta", None) or {}).get("dagster_event")
    if event is None or not event.is_step_failure or event.event_specific_data is None:
        return False
    error = getattr(event.event_specific_data, "error", None)
    return error is not None and error.cls_name == GATE_REFUSAL


def root_error(record: logging.LogRecord) -> str | None:
    """``Class: first line`` of the innermost error a record's event carries, or None."""
    event = (getattr(record, "dagster_meta", None) or {}).get("dagster_event")
    err = getattr(getattr(event, "event_specific_data", None), "error", None)
    if err is None:
        return None
    while err.cause is not None:
        err = err.cause
    first = (err.message or "").strip().splitlines()
    return f"{err.cls_name}: {first[0] if first else ''}"[:300]


def _step_key(record: logging.LogRecord) -> str | None:
    meta = getattr(record, "dagster_meta", None) or {}
    return meta.get("step_key") or getattr(meta.get("dagster_event"), "step_key", None)


# What Dagster says after a failed step: each step downstream skipped, then the run failed
_SKIPPED = re.compile(r"Dependencies for step \S+ failed: \[([^\]]*)\]")
_RUN_FAILED = re.compile(r"Steps failed: \[([^\]]*)\]")


def _keys(match: re.Match | None) -> set[str] | None:
    return None if match is None else set(re.findall(r"'([^']+)'", match.group(1)))


def _refused_checks(record: logging.LogRecord) -> str:
    """``churn/candidate_model: min_metric`` from a refusal's message (its second line)."""
    lines = record.dagster_meta["dagster_event"].event_specific_data.error.message.strip().splitlines()
    return lines[1].strip() if len(lines) > 1 else "a blocking check"


class _OneLine(logging.Filter):
    """The gate's refusal as one line (or, with ``verdicts`` off, nothing), and nothing that only
    repeats a failure already said (the steps skipped after it; the run's failure when every
    failed step was a refusal); any other failure is one line (no stack trace). Dagster builds
    loggers per context (the run's, each step's): what a run's records said is kept per run id,
    for the records that come later."""

    said: dict[str, tuple[set[str], set[str]]] = {}  # run id -> (failed steps, refused steps)

    def __init__(self, verdicts: bool) -> None:
        super().__init__()
        self.verdicts = verdicts

    def filter(self, record: logging.LogRecord) -> bool:
        meta = getattr(record, "dagster_meta", None) or {}
        failed, refused = self.said.setdefault(str(meta.get("run_id")), (set(), set()))
        event = meta.get("dagster_event")
        if event is not None and event.is_step_failure:
            failed.add(_step_key(record) or "")
        if is_gate_refusal(record):
            refused.add(_step_key(record) or "")
            if not self.verdicts:
                return False
            where = " - ".join(str(meta.get(k) or "") for k in ("job_name", "run_id")) + f" - {_step_key(record)}"
            record.msg, record.args = (
                f"{where} - the gate refused the candidate ({_refused_checks(record)}): not deployed",
                (),
            )
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            return True
        if not self.verdicts and _VERDICT.match(str(meta.get("orig_message", ""))):
            return False
        msg = record.msg
        if not isinstance(msg, str):
            return True
        skipped_after = _keys(_SKIPPED.search(msg))
        if skipped_after is not None and skipped_after <= failed:
            return False
        run_failed = _keys(_RUN_FAILED.search(msg))
        if run_failed and run_failed <= refused:
            return False
        if "\n\n" in msg:  # Dagster appends the error's stack after a blank line
            head, _, rest = msg.partition("\n\n")
            why = root_error(record) or rest.strip().splitlines()[0]
            record.msg, record.args = f"{head} - {why} (stack trace: this run's events, in the UI)", ()
        return True


@dg.logger(
    {
        "log_level": dg.Field(str, is_required=False, default_value="INFO", description="The logger's threshold."),
        "name": dg.Field(str, is_required=False, default_value="dagster", description="The logger's name."),
        "verdicts": dg.Field(
            bool,
            is_required=False,
            default_value=True,
            description="Log the gate's verdicts and refusal (off where the command prints them itself).",
        ),
    },
    description="Dagster's console log: the gate's refusal as its verdicts, other failures in one line.",
)
def console_without_gate_refusals(init_context: dg.InitLoggerContext) -> logging.Logger:
    cfg = init_context.logger_config
    log = dg.colored_console_logger.logger_fn(init_context)  # reads log_level and name
    log.addFilter(_OneLine(cfg["verdicts"]))
    return log


LOGGERS = {CONSOLE_LOGGER: console_without_gate_refusals}  # the Definitions' default for every job
# Dagster instantiates a job's loggers only when a run's config names them (else its own console
# logger). Each platform job carries this as its `config`. On a job without partitions that is a
# default filled into any run config lacking a `loggers` key. On the partitioned ingest job it is
# each partition's run config, which Dagster uses only for a request with no run config of its own
# (RunRequest.with_resolved_tags_and_config), so the run configs the platform builds for its jobs
# carry it too (``job_run_config``: multi-file ingest runs, retries). Not covered: a launchpad run of
# the ingest job whose config leaves out the `loggers` block, and the implicit asset job (one
# asset's Materialize in the UI), which has no such default.
JOB_CONFIG = {"loggers": {CONSOLE_LOGGER: {"config": {"log_level": "INFO"}}}}


def job_run_config(run_config: Mapping | None = None) -> dict:
    """``run_config`` for a run of a platform job, with the console logger above unless it names
    loggers of its own."""
    return {**JOB_CONFIG, **(run_config or {})}


def quiet_refusals(job: dg.JobDefinition) -> dg.JobDefinition:
    """``job`` with the console logger above (run it with ``run_config(level)``)."""
    return job.with_logger_defs(LOGGERS)


def run_config(level: str = "INFO") -> dict:
    """Select that logger for an in-process run whose command prints the verdicts (at the
    instance's ``python_log_level``, INFO: what `up` shows too)."""
    return {"loggers": {CONSOLE_LOGGER: {"config": {"log_level": level, "verdicts": False}}}}


MLFLOW_STORE_LOGGER = "mlflow.store.db.utils"  # logs each SQL error with its traceback, then raises it


class _NoTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            e = record.exc_info[1]
            first = (str(e).strip().splitlines() or [""])[0]
            record.msg = f"{' '.join(record.getMessage().split())[:200]} ({type(e).__name__}: {first[:200]})"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def one_line_store_errors() -> None:
    """MLflow's SQL store errors in one line each: the error is raised to the platform anyway,
    which says what it means (a lost registry, a lock); 60 lines of SQLAlchemy frames do not."""
    log = logging.getLogger(MLFLOW_STORE_LOGGER)
    if not any(isinstance(f, _NoTraceback) for f in log.filters):
        log.addFilter(_NoTraceback())
