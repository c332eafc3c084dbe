"""Which process is a run's worker, and whether a process recorded earlier (a run worker, a claim's
`run`) is still that process."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg


def process_started_at(pid: int) -> tuple[str, float] | None:
    """(state, start time as epoch seconds) from /proc, or None when unknown (not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        btime = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return fields[0], btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def pid_alive(pid: int, started_by: float | None) -> bool:
    """Whether the process ``pid`` that started a run (or made a claim) at ``started_by`` is still
    there: a PID that a process started later took over (a container restart hands out low PIDs
    again) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    info = process_started_at(pid)
    if info is None:
        return True
    state, started = info
    if state == "Z":  # killed, not yet reaped by its parent
        return False
    # The PID was reused by a process that started after the run did: the worker is gone.
    return started_by is None or started <= started_by + 2


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The PID of the process that started the run (its RUN_START event), however launched."""
    conn = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START, limit=1)
    for rec in conn.records:
        ev = rec.event_log_entry.dagster_event
        if ev is not None and ev.pid:
            return int(ev.pid)
    return None
