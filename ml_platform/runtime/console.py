"""The console log of the runs `ml-platform run`, `train` and `check` execute in-process.

Dagster's colored console logger, with two changes. The step failure a blocking check raises when
the gate refuses a candidate (``DagsterAssetCheckFailedError``) is not logged: that refusal is an
outcome, not a crash, and the command prints each check's verdict and reasons itself. Any other
failure (a crashing check included) is logged as one line naming the error; its stack trace is in
the run's events (the UI), as for the ingest runs, whose console log is off.
"""

from __future__ import annotations

import logging
import re

import dagster as dg

GATE_REFUSAL = "DagsterAssetCheckFailedError"
CONSOLE = "console"


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


class _OneLine(logging.Filter):
    """Drops the gate's refusal and what only repeats a failure already said (the steps skipped
    after it; the run's failure when every failed step was a refusal); any other failure is one
    line (no stack trace). Dagster builds loggers per context (the run's, each step's): what a
    run's records said is kept per run id, for the records that come later."""

    said: dict[str, tuple[set[str], set[str]]] = {}  # run id -> (failed steps, refused steps)

    def filter(self, record: logging.LogRecord) -> bool:
        meta = getattr(record, "dagster_meta", None) or {}
        failed, refused = self.said.setdefault(str(meta.get("run_id")), (set(), set()))
        event = meta.get("dagster_event")
        if event is not None and event.is_step_failure:
            failed.add(_step_key(record) or "")
        if is_gate_refusal(record):
            refused.add(_step_key(record) or "")
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


@dg.logger(dg.colored_console_logger.config_schema, description="Dagster's console log: failures in one line.")
def console_without_gate_refusals(init_context: dg.InitLoggerContext) -> logging.Logger:
    log = dg.colored_console_logger.logger_fn(init_context)
    log.addFilter(_OneLine())
    return log


def quiet_refusals(job: dg.JobDefinition) -> dg.JobDefinition:
    """``job`` with the console logger above (run it with ``run_config(level)``)."""
    return job.with_logger_defs({CONSOLE: console_without_gate_refusals})


def run_config(level: str = "INFO") -> dict:
    """Select that logger (at the instance's ``python_log_level``, INFO: what `up` shows too)."""
    return {"loggers": {CONSOLE: {"config": {"log_level": level}}}}


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
