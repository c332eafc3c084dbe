"""Fault injection for the crash-consistency tests: ``ML_PLATFORM_FAULT=<point>`` makes the
process kill itself with SIGKILL when it reaches that point (no cleanup, no finally blocks,
like a power cut or the OOM killer). Unset in normal use; checking it costs one dict lookup."""

from __future__ import annotations

import os
import signal

ENV = "ML_PLATFORM_FAULT"


def point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
