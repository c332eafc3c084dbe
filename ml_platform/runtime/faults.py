"""Fault injection for the crash-consistency tests: ``ML_PLATFORM_FAULT=<point>`` makes the
process kill itself with SIGKILL when it reaches that point (no cleanup, no finally blocks,
like a power cut or the OOM killer). Unset in normal use; checking it costs one dict lookup.
With ``ML_PLATFORM_FAULT_ONCE=<path>`` only the first process to reach the point dies (it
creates ``path``), so the retry that repairs it runs through: how a test kills one run worker under `ml-platform up`."""

from __future__ import annotations

import os
import signal

ENV = "ML_PLATFORM_FAULT"
ONCE_ENV = "ML_PLATFORM_FAULT_ONCE"


def point(name: str) -> None:
    if os.environ.get(ENV) != name:
        return
    once = os.environ.get(ONCE_ENV)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)


BARRIER_ENV = "ML_PLATFORM_BARRIER"  # "<point>,<n>,<dir>": the race tests' rendezvous


def barrier(name: str, timeout: float = 120) -> None:
    """With ``ML_PLATFORM_BARRIER=<name>,<n>,<dir>``, wait at this point until ``n`` processes
    reached it (each leaves a file in ``dir``): how a test makes two `ml-platform run`s race."""
    spec = os.environ.get(BARRIER_ENV, "").split(",", 2)
    if spec[0] != name or len(spec) != 3:
        return
    import time
    from pathlib import Path

    n, here = spec[1], Path(spec[2])
    here.mkdir(parents=True, exist_ok=True)
    (here / str(os.getpid())).touch()
    deadline = time.monotonic() + timeout
    while len(list(here.iterdir())) < int(n) and time.monotonic() < deadline:
        time.sleep(0.05)
