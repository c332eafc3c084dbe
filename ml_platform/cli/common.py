"""What every command shares: the settings it runs on, the model it names."""

from __future__ import annotations

import os
import sys

from ml_platform.core import files
from ml_platform.runtime.scale_out import export_password
from ml_platform.settings import Settings, load_settings

CURRENT: list[Settings] = []  # the settings the running command loaded (for its error line)


def settings_of(args, *, warn: bool = True) -> Settings:
    """The settings a command runs on; ``warn=False`` leaves ``print_warnings`` to the command
    (`up` prints them once it has written the demo batches)."""
    s = load_settings(args.config or getattr(args, "project", None))
    CURRENT[:] = [s]
    files.reserve_failure_note(s.storage)
    if warn:
        print_warnings(s)
    export_password(s)  # scale_out.postgres: libpq (MLflow, Dagster) reads it from the environment only
    if s.project is not None:  # the project's own code (transform, checks, estimators) imports as in `dg dev`
        code_dir = str(s.project / "src" if (s.project / "src").is_dir() else s.project)
        if code_dir not in sys.path:
            sys.path.insert(0, code_dir)
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (code_dir, os.environ.get("PYTHONPATH")) if p)
    return s


def print_warnings(s: Settings) -> None:
    """The settings' warnings that still hold: a landing dir that did not exist at load but
    exists now (`up` writes the demo batches into it) is no longer news."""
    created = tuple(f"models.{n}.landing_dir: " for n in s.models if s.landing_dir(n) and s.landing_dir(n).is_dir())
    for w in s.warnings:
        if not (w.startswith(created) and "does not exist yet" in w):
            print(f"warning: {w}", file=sys.stderr)


def model_of(s: Settings, name: str | None) -> str:
    if name is None:
        if len(s.models) == 1:
            return next(iter(s.models))
        raise SystemExit(f"--model is required: configured models are {sorted(s.models)}")
    if name not in s.models:
        where = f"the ModelComponents of the dg project {s.project}" if s.project is not None else s.source
        raise SystemExit(f"unknown model {name!r}: configured models are {sorted(s.models)} ({where})")
    return name


def _frames(*excs: BaseException) -> list[str]:
    out = []
    for e in excs:
        tb = e.__traceback__
        while tb is not None:
            out.append(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
    return out


def storage_failure(exc: BaseException) -> str | None:
    """One line for a storage fault (disk full, a file-size limit, a read-only mount...) in
    ``exc``, naming what was written where; None when ``exc`` is something else."""

    def database(e: BaseException) -> str:
        s = CURRENT[0] if CURRENT else None
        return files.sqlite_named(_frames(exc, e), s and s.tracking_uri, s and s.dagster_home)

    return files.storage_fault(exc, database)


def report_storage_failure(line: str, command: str) -> None:
    """Print the line, and keep it for the next command (``files.note_failure``)."""
    print(f"error: {line}", file=sys.stderr)
    if CURRENT:
        files.note_failure(CURRENT[0].storage, line, command)


def previous_failure(s: Settings) -> None:
    """What a previous command's storage fault left: said once, by the next command."""
    note = files.last_failure(s.storage, clear=True)
    if note:
        print(f"note: the last `ml-platform {note.get('command', '?')}` stopped: {note.get('error')}", file=sys.stderr)
