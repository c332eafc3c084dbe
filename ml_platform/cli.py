"""`ml-platform`: up | run | serve | simulate | rollback | status | score | worker | train | approve | reject."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from ml_platform.settings import ConfigError, Settings, load_settings


def _settings(args) -> Settings:
    from ml_platform.scale_out import export_password

    s = load_settings(args.config)
    for w in s.warnings:
        print(f"warning: {w}", file=sys.stderr)
    export_password(s)  # scale_out.postgres: libpq (MLflow, Dagster) reads it from the environment only
    return s


def cmd_worker(args) -> int:
    """A Celery worker that executes runs (scale_out.celery): one run at a time per worker
    (solo pool: the worker's PID is the run's, which is how a killed worker is noticed)."""
    from ml_platform import scale_out

    s = _settings(args)
    if not scale_out.enabled(s):
        print(f"{s.source}: scale_out.celery is not configured: runs execute in-process under "
              "`ml-platform up`; see the README's scale-out section", file=sys.stderr)
        return 2
    from ml_platform.celery_app import app

    name = args.name or f"ml_platform-{os.getpid()}@%h"
    app.worker_main(["worker", "--pool", "solo", "--concurrency", "1", "-Q", scale_out.CELERY_QUEUE,
                     "--hostname", name, "--loglevel", args.loglevel, "--without-gossip", "--without-mingle"])
    return 0


def cmd_simulate(args) -> int:
    from ml_platform.core.simulate import write_batches

    s = _settings(args)
    name = _model(s, args.model)
    paths = write_batches(s.landing_dir(name), args.batches, rows=args.rows, drift=args.drift,
                          seed=args.seed, fmt=args.format, drift_from=args.drift_from)
    for p in paths:
        print(p)
    return 0


def _model(s: Settings, name: str | None) -> str:
    if name is None:
        if len(s.models) == 1:
            return next(iter(s.models))
        raise SystemExit(f"--model is required: configured models are {sorted(s.models)}")
    if name not in s.models:
        raise SystemExit(f"unknown model {name!r}: configured models are {sorted(s.models)} ({s.source})")
    return name


def cmd_run(args) -> int:
    from ml_platform.instance import get_instance

    s = _settings(args)
    instance = get_instance(s)
    from ml_platform.definitions import build_definitions
    from ml_platform.runner import run_pending

    defs = build_definitions(s)
    models = [_model(s, args.model)] if args.model else None
    summary = run_pending(s, defs, instance, models)
    from ml_platform.champion import champion_version

    deployed = {name: champion_version(s, name) for name in summary}
    print("\nSummary")
    for name, outcomes in summary.items():
        q = sum(o.quarantined_rows for o in outcomes)
        trained = [o.train for o in outcomes if o.train]
        print(f"  {name}: {len(outcomes)} batch(es), {q} quarantined row(s), {len(trained)} candidate(s), "
              f"{sum(t.deployed for t in trained)} deployed; serving version: {deployed[name]}")
    return 0


def cmd_status(args) -> int:
    from ml_platform.resources.registry import registry_for
    from ml_platform.status import render, status, to_json

    from ml_platform.resources.endpoint import endpoint_for

    s = _settings(args)
    doc = status(s, registry_for(s), endpoint_for(s))
    print(to_json(doc) if args.json else render(doc))
    return 0


def cmd_rollback(args) -> int:
    from ml_platform.promotion import PromotionError, rollback
    from ml_platform.resources.endpoint import endpoint_for
    from ml_platform.resources.registry import registry_for

    s = _settings(args)
    name = _model(s, args.model)
    try:
        p = rollback(s, registry_for(s), endpoint_for(s), name, args.to_version, actor="cli")
    except PromotionError as e:
        print(f"rollback failed: {e}", file=sys.stderr)
        return 1
    print(f"{name}: champion v{p.previous} -> v{p.version}; endpoint: {p.endpoint}")
    return 0


def cmd_score(args) -> int:
    from ml_platform.scoring import score_file

    s = _settings(args)
    t0 = last = time.monotonic()

    def progress(rows: int) -> None:  # a line every 2 s on stderr for long files
        nonlocal last
        now = time.monotonic()
        if now - last >= 2:
            last = now
            print(f"  {rows:,} rows scored ({rows / (now - t0):,.0f} rows/s)", file=sys.stderr, flush=True)

    try:
        res = score_file(s, _model(s, args.model), args.file, out_path=args.out, progress=progress)
    except (ValueError, FileNotFoundError) as e:  # no champion, unreadable file, missing column
        print(f"score failed: {e}", file=sys.stderr)
        return 1
    print(f"scored {res['rows']} rows with v{res['model_version']} in {res['seconds']:.2f}s "
          f"({res['rows_per_second']:.0f} rows/s) -> {res['out_path']}")
    return 0


def cmd_serve(args) -> int:
    from ml_platform.serving.server import run

    s = _settings(args)
    os.environ["ML_PLATFORM_CONFIG"] = str(s.source)
    _repair_before_serving(s)
    run(s, host=args.host, port=args.port, workers=args.workers)
    return 0


def _repair_before_serving(s: Settings) -> None:
    """An interrupted champion move is finished, and the store's champion files rebuilt from
    the registry, before the endpoint reads them (the endpoint itself never imports MLflow)."""
    from ml_platform.promotion import reconcile
    from ml_platform.resources.registry import registry_for

    for name in s.models:
        try:
            for note in reconcile(s, registry_for(s), None, name):
                print(f"[serve] {name}: repaired: {note}", flush=True)
        except Exception as e:  # noqa: BLE001 - the endpoint still starts and reports readiness
            print(f"[serve] {name}: could not check the champion against the registry: {e}",
                  file=sys.stderr, flush=True)


def _seed_demo_data(s: Settings) -> None:
    """`up` on a fresh checkout: give the demo model something to ingest."""
    from ml_platform.core import catalog
    from ml_platform.core.simulate import generate_batch, write_batches

    columns = set(generate_batch(1).columns)
    for name, cfg in s.models.items():
        landing = s.landing_dir(name)
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


def cmd_up(args) -> int:
    from ml_platform.champion import champion_version
    from ml_platform.instance import prepare_environment, workspace_path

    s = _settings(args)
    prepare_environment(s)
    _seed_demo_data(s)
    env = dict(os.environ)
    procs = []
    # The daemon logs every dequeue tick at INFO (each second); runs still print their events.
    dagster = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace_path(s)),
               "-h", s.ui.host, "-p", str(s.ui.port), "--log-level", "warning"]
    serve = [sys.executable, "-m", "ml_platform", "serve", "--config", str(s.source)]
    for cmd in (serve, dagster):
        procs.append(subprocess.Popen(cmd, env=env, start_new_session=True, cwd=s.source.parent))
    print(f"[up] Dagster UI: http://{s.ui.host}:{s.ui.port}   endpoint: {s.endpoint_url}   "
          f"MLflow: {s.tracking_uri}\n[up] DAGSTER_HOME={s.dagster_home}; Ctrl-C stops everything")
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
                    print(f"[up] {name}: champion v{version} published -> "
                          f"{s.endpoint_url}/models/{name}/invocations", flush=True)
                served[name] = version
        time.sleep(1)
    print("[up] a child process exited", file=sys.stderr)
    stop()
    return 1


def parser() -> argparse.ArgumentParser:
    config_help = "path to ml_platform.yaml (default: $ML_PLATFORM_CONFIG or ./ml_platform.yaml)"
    p = argparse.ArgumentParser(prog="ml-platform", description=__doc__)
    p.add_argument("--config", help=config_help)
    # --config is accepted after the subcommand too (SUPPRESS keeps a top-level value).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    command("up", "Dagster UI + daemon (sensors running) + endpoint").set_defaults(fn=cmd_up)
    r = command("run", "take every pending landing file through the whole graph once")
    r.add_argument("--model")
    r.set_defaults(fn=cmd_run)
    sv = command("serve", "the endpoint alone")
    sv.add_argument("--host")
    sv.add_argument("--port", type=int)
    sv.add_argument("--workers", type=int)
    sv.set_defaults(fn=cmd_serve)
    sm = command("simulate", "write demo batches into the landing zone")
    sm.add_argument("--model")
    sm.add_argument("--batches", type=int, default=3)
    sm.add_argument("--rows", type=int, default=2000)
    sm.add_argument("--drift", type=float, default=0.0, help="0 = none, 1 = strong feature and label drift")
    sm.add_argument("--drift-from", type=int, default=0, help="first batch index that gets the drift")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--format", choices=["csv", "parquet"], default="csv")
    sm.set_defaults(fn=cmd_simulate)
    rb = command("rollback", "move the champion to an earlier gate-passed version")
    rb.add_argument("--model")
    rb.add_argument("--to-version", type=int)
    rb.set_defaults(fn=cmd_rollback)
    sc = command("score", "batch-score a CSV/Parquet file with the serving champion (ONNX)")
    sc.add_argument("--model")
    sc.add_argument("file")
    sc.add_argument("--out", help="output Parquet (default: next to the input, *.predictions.parquet)")
    sc.set_defaults(fn=cmd_score)
    wk = command("worker", "a Celery worker that executes runs (when scale_out.celery is configured)")
    wk.add_argument("--name", help="Celery node name (default: ml_platform-<pid>@<host>)")
    wk.add_argument("--loglevel", default="INFO")
    wk.set_defaults(fn=cmd_worker)
    from ml_platform.cli_approval import add_commands

    add_commands(command)  # train | approve | reject
    st = command("status", "champions, versions, gate verdicts, batches")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.config:
        os.environ["ML_PLATFORM_CONFIG"] = os.path.abspath(args.config)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
