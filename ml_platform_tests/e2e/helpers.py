"""Starting and stopping real processes for end-to-end tests (by PID / process group only)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from ml_platform_tests.e2e import warm


def cli(config: Path, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`ml-platform --config CONFIG ARGS` in its own process, to the end (e2e/warm.py)."""
    return warm.run(["--config", config, *args], cwd=config.parent, env=env, timeout=timeout)


def start(config: Path, *args: str, log: Path, env: dict | None = None):
    """A long-running `ml-platform` process in a session of its own (stopped by `stop`)."""
    with open(log, "wb") as f:
        return warm.popen(
            ["--config", config, *args],
            cwd=config.parent,
            env={**os.environ, **(env or {})},
            stdout=f,
            stderr=warm.STDOUT,
            new_session=True,
        )


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, grace: float = 20) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    except ProcessLookupError:  # it ended (and its group with it) after poll()
        proc.wait(10)


def wait_for(fn, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (httpx.HTTPError, OSError) as e:
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


ROW = {
    "customer_id": 1,
    "tenure_months": 3,
    "monthly_charges": 80.5,
    "support_calls": 4,
    "usage_gb": 10.0,
    "age": 30,
    "plan": "basic",
    "contract": "monthly",
    "region": 3,
    "payment_method": "card",
}
