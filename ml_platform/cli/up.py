"""`ml-platform up`: a small supervisor for the endpoint and `dagster dev` (UI + daemon).

It starts both in their own process groups, prints one line per champion change, and stops
them in order on Ctrl-C / SIGTERM (see ``stop``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ml_platform.cli.common import print_warnings
from ml_platform.control.champion import champion_version
from ml_platform.core import catalog
from ml_platform.core.simulate import generate_batch, write_batches
from ml_platform.runtime import console
from ml_platform.runtime.instance import prepare_environment, workspace_path
from ml_platform.settings import Settings

# runtime/console.QUIET_WARNING, through the environment, which nothing undoes (every process:
# code server, daemon, run workers)
QUIET_WARNINGS = f"ignore:{console.QUIET_WARNING}"


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONWARNINGS"] = ",".join(w for w in (env.get("PYTHONWARNINGS"), QUIET_WARNINGS) if w)
    return env


def _seed_demo_data(s: Settings) -> None:
    """`up` on a fresh checkout: give the demo model something to ingest."""
    columns = set(generate_batch(1).columns)
    for name, cfg in s.models.items():
        landing = s.landing_dir(name)
        if landing is None:  # its batches come from an asset (source)
            continue
        needed = set(cfg.features) | {cfg.target}
        empty = not landing.exists() or not any(landing.iterdir())
        if empty and not catalog.read_records(s.model_dir(name)) and needed <= columns:
            paths = write_batches(landing, 3, rows=2000, seed=0)
            print(f"[up] wrote {len(paths)} demo batches to {landing}")


def _signal(pid: int, sig: int, group: bool) -> None:
    try:
        os.killpg(pid, sig) if group else os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait(procs, seconds: float) -> None:
    deadline = time.time() + seconds
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _group_gone(procs, seconds: float) -> bool:
    """True once no process is left in any of the children's process groups."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        for p in procs:
            p.poll()  # reap, so a zombie leader does not keep its group "alive"
        if not any(_group_alive(p.pid) for p in procs):
            return True
        time.sleep(0.2)
    return False


def up(s: Settings) -> int:
    """Start everything; ``s`` comes from ``settings_of(args, warn=False)``: its warnings are
    printed here, after the demo batches are written (a landing dir created by them is no news)."""
    # A shell that starts `up` in the background (`... &` in a script) leaves SIGINT ignored, and a
    # child inherits an ignored signal: dagster dev would ignore SIGINT and SIGTERM alike (it maps
    # SIGTERM to SIGINT's handler). The children start with the default; `stop` is set below.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    prepare_environment(s)
    _seed_demo_data(s)
    print_warnings(s)
    env = child_env()
    procs = []
    # The daemon logs every dequeue tick at INFO (each second); runs still print their events.
    dagster = [
        sys.executable,
        # `dagster dev` tells its user to use `dg dev`: up is that user and chose it (it takes the
        # workspace file that names the code location); the notice is not for the person at the console
        "-W",
        "ignore:Function `dev_command` is superseded:FutureWarning",
        "-m",
        "dagster",
        "dev",
        "-w",
        str(workspace_path(s)),
        "-h",
        s.ui.host,
        "-p",
        str(s.ui.port),
        "--log-level",
        "warning",
    ]
    serve = [sys.executable, "-m", "ml_platform", "serve", "--config", str(s.source)]
    for cmd in (serve, dagster):
        procs.append(subprocess.Popen(cmd, env=env, start_new_session=True, cwd=s.source.parent))
    print(
        f"[up] Dagster UI: http://{s.ui.host}:{s.ui.port}   endpoint: {s.endpoint_url}   "
        f"MLflow: {s.tracking_uri}\n[up] DAGSTER_HOME={s.dagster_home}; Ctrl-C stops everything"
    )
    if s.scale_out.celery is not None:
        print("[up] runs execute on Celery workers: start one or more with `ml-platform worker`", flush=True)

    def stop(*_):
        # dagster dev alone gets SIGINT: it stops the daemon and webserver before its code server.
        # SIGINT to its whole group would kill the code server under a sensor tick in flight
        # ("Location ml_platform does not exist" tracebacks). Runs still in flight in its group
        # are interrupted afterwards, so they end FAILED rather than orphaned.
        print("[up] stopping", file=sys.stderr, flush=True)
        for p in procs:
            if p.poll() is None:
                _signal(p.pid, signal.SIGINT if p.args is dagster else signal.SIGTERM, group=p.args is not dagster)
        _wait(procs, 20)
        for p in procs:
            _signal(p.pid, signal.SIGINT, group=True)  # leftovers: run workers, a code server
        if not _group_gone(procs, 10):
            for p in procs:
                _signal(p.pid, signal.SIGKILL, group=True)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    served = {}
    while all(p.poll() is None for p in procs):
        for name in s.models:  # one line per champion change: the thing people wait for
            try:
                version = champion_version(s, name)
            except ValueError:
                version = None
            if version != served.get(name, None):
                if version is not None:
                    print(
                        f"[up] {name}: champion v{version} published -> {s.endpoint_url}/models/{name}/invocations",
                        flush=True,
                    )
                served[name] = version
        time.sleep(1)
    print("[up] a child process exited", file=sys.stderr)
    stop()
    return 1
