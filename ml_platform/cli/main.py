"""`ml-platform`: up | run | serve | simulate | rollback | reconcile | exclude | status | score | worker | train |
approve | reject.

Each command imports the layers it needs when it runs, not at start: importing dagster and
mlflow takes seconds, which `serve`, `simulate` and `--help` do not need to pay."""

from __future__ import annotations

import argparse
import os
import sys
import time

from ml_platform.cli.approval import add_commands
from ml_platform.cli.common import model_of, previous_failure, report_storage_failure, settings_of, storage_failure
from ml_platform.settings import CONFIG_ENV, ConfigError, Settings


def cmd_worker(args) -> int:
    """A Celery worker that executes runs (scale_out.celery): one run at a time per worker
    (solo pool: the worker's PID is the run's, which is how a killed worker is noticed)."""
    from ml_platform.runtime import scale_out

    s = settings_of(args)
    if not scale_out.enabled(s):
        print(
            f"{s.source}: scale_out.celery is not configured: runs execute in-process under "
            "`ml-platform up`; see the README's scale-out section",
            file=sys.stderr,
        )
        return 2
    from ml_platform.cli.celery_app import app

    name = args.name or f"ml_platform-{os.getpid()}@%h"
    app.worker_main(
        [
            "worker",
            "--pool",
            "solo",
            "--concurrency",
            "1",
            "-Q",  # the train queue first: a first champion does not wait behind an ingest backlog
            f"{scale_out.TRAIN_QUEUE},{scale_out.CELERY_QUEUE}",
            "--hostname",
            name,
            "--loglevel",
            args.loglevel,
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0


def cmd_simulate(args) -> int:
    from ml_platform.core.simulate import write_batches

    s = settings_of(args)
    name = model_of(s, args.model)
    if s.landing_dir(name) is None:
        print(
            f"{s.origin(name)}.source: model {name!r} reads its batches from asset {s.models[name].source.asset}; "
            "simulate writes landing files (materialize your asset instead)",
            file=sys.stderr,
        )
        return 2
    paths = write_batches(
        s.landing_dir(name),
        args.batches,
        rows=args.rows,
        drift=args.drift,
        seed=args.seed,
        fmt=args.format,
        drift_from=args.drift_from,
    )
    for p in paths:
        print(p)
    return 0


def _champion_or_none(s, name: str) -> int | None:
    """The champion before `run`, for its summary only: an unreadable pointer is `run`'s to repair."""
    from ml_platform.control.champion import champion_version

    try:
        return champion_version(s, name)
    except (ValueError, OSError):
        return None


def cmd_run(args) -> int:
    from ml_platform.control.champion import champion_version
    from ml_platform.control.runner import run_pending
    from ml_platform.defs.definitions import load_definitions
    from ml_platform.runtime.instance import get_instance

    s = settings_of(args)
    previous_failure(s)
    instance = get_instance(s)
    defs = load_definitions(s)
    models = [model_of(s, args.model)] if args.model else None
    before = {name: _champion_or_none(s, name) for name in models or s.models}
    summary = run_pending(s, defs, instance, models)

    deployed = {name: champion_version(s, name) for name in summary}
    print("\nSummary")
    refused = [name for name, outcomes in summary.items() if any(o.kind == "refused" for o in outcomes)]
    for name, outcomes in summary.items():
        if name in refused:
            print(f"  {name}: refused (the MLflow registry was lost: see above); serving version: {deployed[name]}")
            continue
        batches = [o for o in outcomes if o.kind == "batch"]
        q = sum(o.quarantined_rows for o in outcomes)
        trained = [o.train for o in outcomes if o.train]
        failed = [os.path.basename(o.file) or o.partition for o in batches if o.status == "failed"]
        named = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        print(
            f"  {name}: {len(batches)} batch(es)"
            + (f" ({len(failed)} failed: {named})" if failed else "")
            + f", {q} quarantined row(s), {len(trained)} candidate(s), "
            f"{sum(t.deployed for t in trained)} deployed"
            + (f", {n} staged (shadow / canary)" if (n := sum(bool(t.staged) for t in trained)) else "")
            + f"; serving version: {'none yet' if deployed[name] is None else deployed[name]}"
            # a move no candidate of this run made (a staged candidate promoted by its live comparison)
            + (
                f" (was {before[name]})"
                if before.get(name) not in (None, deployed[name]) and not any(t.deployed for t in trained)
                else ""
            )
        )
        if deployed[name] is None and not trained:  # nothing happened: say what would
            print(
                f"  {name}: no champion yet: land a labelled batch, or train on the ingested ones with "
                f"`ml-platform train --model {name}`"
            )
    return 1 if refused else 0


def cmd_check(args) -> int:
    """CI for models: the working tree's code trained on the current data and judged by the offline
    gate against the serving champion (live_shadow needs live traffic after a deploy); nothing
    deploys. Exit 1 when the gate would refuse."""
    from ml_platform.control.runner import check
    from ml_platform.defs.definitions import load_definitions
    from ml_platform.names import offline_checks

    s = settings_of(args)
    models = [model_of(s, args.model)] if args.model else list(s.models)
    defs = load_definitions(s)
    refused = []
    for name in models:
        out = check(s, defs, name)
        judged = {c for c, _, _ in out.gate}
        missing = [c for c in offline_checks(s.models[name]) if c not in judged]
        if missing:  # a check that crashed left no verdict: the gate did not accept the candidate
            print(f"[{name}]   no verdict from: {', '.join(missing)}" + (f" ({out.error})" if out.error else ""))
        if out.version is None or missing or not all(passed for _, passed, _ in out.gate):
            refused.append(name)
    if refused:
        print(f"check: the gate would refuse {', '.join(refused)}", file=sys.stderr)
        return 1
    print(f"check: the gate would accept {', '.join(models)}")
    return 0


def cmd_status(args) -> int:
    from ml_platform.control.champion import RegistryLost
    from ml_platform.control.status import fast_status, render, status, to_json

    s = settings_of(args)
    previous_failure(s)
    try:
        doc = fast_status(s)
        if doc is None:  # not a SQLite registry: through MLflow's client
            from ml_platform.resources.endpoint import endpoint_for
            from ml_platform.resources.registry import registry_for

            doc = status(s, registry_for(s), endpoint_for(s))
    except RegistryLost as e:
        print(f"status refused: {e}", file=sys.stderr)
        return 1
    print(to_json(doc) if args.json else render(doc))
    return 0


def cmd_exclude(args) -> int:
    from ml_platform.control.exclusion import ExclusionError, Unchanged, exclude
    from ml_platform.core.approval import os_user

    s = settings_of(args)
    name = model_of(s, args.model)
    try:
        rec = exclude(s, name, args.batch, reason=args.reason or "", by=args.by or os_user(), undo=args.undo)
    except Unchanged as e:  # idempotent: asked twice, done once
        print(e)
        return 0
    except ExclusionError as e:
        print(f"exclude failed: {e}", file=sys.stderr)
        return 1
    try:  # the UI shows it on the batch's partition too (the record and the audit hold it already)
        from ml_platform.control.exclusion import observation
        from ml_platform.runtime.instance import get_instance

        get_instance(s).report_runless_asset_event(observation(name, rec))
    except Exception as e:  # noqa: BLE001 - recorded; only the UI's copy is missing
        print(f"warning: recorded, but not shown on the batch's asset page: {type(e).__name__}: {e}", file=sys.stderr)
    if args.undo:
        print(f"{name}: batch {rec.partition} is back in training")
    else:
        print(f"{name}: batch {rec.partition} is out of training ({rec.excluded['reason']})")
    return 0


def cmd_reconcile(args) -> int:
    """Check each model's champion against the registry and repair what can be repaired;
    ``--rebuild-registry`` first gives a lost registry back the store's versions."""
    from ml_platform.control.champion import registry_loss
    from ml_platform.control.reconcile import reconcile
    from ml_platform.control.registry_rebuild import RebuildRefused, rebuild_registry
    from ml_platform.resources.endpoint import endpoint_for
    from ml_platform.resources.registry import registry_for

    s = settings_of(args)
    bad = 0
    for name in [model_of(s, args.model)] if args.model else list(s.models):
        reg = registry_for(s)
        if args.rebuild_registry:
            try:
                for note in rebuild_registry(s, reg, name):
                    print(f"[{name}] rebuilt: {note}")
            except RebuildRefused as e:
                print(f"reconcile refused: {e}", file=sys.stderr)
                bad += 1
                continue
        lost = registry_loss(s, reg, name)
        if lost:
            print(f"reconcile refused: {lost}", file=sys.stderr)
            bad += 1
            continue
        notes = reconcile(s, reg, endpoint_for(s), name)
        for note in notes:
            print(f"[{name}] repaired: {note}")
        if not notes:
            print(f"[{name}] consistent: champion, alias, serving files and audit agree")
    return 1 if bad else 0


def cmd_rollback(args) -> int:
    from ml_platform.cli.approval import show_stage_ended
    from ml_platform.control.operator_actions import rollback
    from ml_platform.control.promotion import PromotionError
    from ml_platform.control.staging import staged
    from ml_platform.resources.endpoint import endpoint_for
    from ml_platform.resources.registry import registry_for

    s = settings_of(args)
    name = model_of(s, args.model)
    rec = staged(s, name)
    try:
        p = rollback(s, registry_for(s), endpoint_for(s), name, args.to_version, actor="cli")
    except PromotionError as e:
        print(f"rollback failed: {e}", file=sys.stderr)
        return 1
    if p.version == p.previous:  # a staged release rolled back; the champion stays
        print(f"{name}: {p.endpoint}")
        if rec is not None:
            show_stage_ended(s, name, int(rec["version"]))
    else:
        print(f"{name}: champion v{p.previous} -> v{p.version}; endpoint: {p.endpoint}")
    return 0


def cmd_score(args) -> int:
    from ml_platform.control.scoring import score_file

    s = settings_of(args)
    t0 = last = time.monotonic()

    def progress(rows: int) -> None:  # a line every 2 s on stderr for long files
        nonlocal last
        now = time.monotonic()
        if now - last >= 2:
            last = now
            print(f"  {rows:,} rows scored ({rows / (now - t0):,.0f} rows/s)", file=sys.stderr, flush=True)

    try:
        res = score_file(s, model_of(s, args.model), args.file, out_path=args.out, progress=progress)
    except (ValueError, FileNotFoundError) as e:  # no champion, unreadable file, missing column
        print(f"score failed: {e}", file=sys.stderr)
        return 1
    print(
        f"scored {res['rows']} rows with v{res['model_version']} in {res['seconds']:.2f}s "
        f"({res['rows_per_second']:.0f} rows/s) -> {res['out_path']}"
    )
    return 0


def cmd_up(args) -> int:
    from ml_platform.cli.up import up

    return up(settings_of(args, warn=False))  # up prints the warnings after writing the demo data


def cmd_serve(args) -> int:
    from ml_platform.serving.server import run

    s = settings_of(args)
    os.environ["ML_PLATFORM_CONFIG"] = str(s.source)
    _repair_before_serving(s)
    _watch_lost_pointers(s, max(5.0, s.serving.poll_seconds))
    run(s, host=args.host, port=args.port, workers=args.workers)
    return 0


def _repair_before_serving(s: Settings, names: list[str] | None = None) -> None:
    """An interrupted champion move is finished, and the store's champion files rebuilt from
    the registry, before the endpoint reads them (the endpoint itself never imports MLflow)."""
    from ml_platform.control.champion import registry_loss
    from ml_platform.control.reconcile import reconcile
    from ml_platform.resources.registry import registry_for

    for name in s.models if names is None else names:
        try:
            lost = registry_loss(s, registry_for(s), name)  # a repair would create an empty registry
            if lost:
                print(f"[serve] {name}: no repair: {lost}", file=sys.stderr, flush=True)
                continue
            for note in reconcile(s, registry_for(s), None, name):
                print(f"[serve] {name}: repaired: {note}", flush=True)
        except Exception as e:  # noqa: BLE001 - the endpoint still starts and reports readiness
            print(
                f"[serve] {name}: could not check the champion against the registry: {e}", file=sys.stderr, flush=True
            )


def _lost_pointers(s: Settings) -> list[str]:
    """Models whose champion pointer is lost (missing, not removed by a champion move)."""
    from ml_platform.control.champion import store

    return [name for name in s.models if store(s).lost(name)]


def _watch_lost_pointers(s: Settings, interval: float) -> None:
    """While `serve` runs: a champion pointer lost under it (deleted by hand, a faulty sync) is
    rebuilt by ``reconcile`` from the registry and the audit. Meanwhile the endpoint keeps
    serving the version it has loaded and reports not ready (``serving/slots.py``)."""
    import threading

    def loop() -> None:
        while True:
            time.sleep(interval)
            try:
                lost = _lost_pointers(s)
            except Exception:  # noqa: BLE001 - an unreadable store: the endpoint reports it
                continue
            if lost:
                _repair_before_serving(s, lost)

    threading.Thread(target=loop, name="ml-platform-pointer-repair", daemon=True).start()


def _count(least: int):
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if n < least:
            raise argparse.ArgumentTypeError(f"{n}: must be at least {least}")
        return n

    return parse


def _port(text: str) -> int:
    n = _count(1)(text)
    if n > 65535:
        raise argparse.ArgumentTypeError(f"{n}: a TCP port is at most 65535")
    return n


def _finite(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if x != x or x in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text}: must be a finite number")
    return x


def parser() -> argparse.ArgumentParser:
    config_help = "path to ml_platform.yaml (default: $ML_PLATFORM_CONFIG or ./ml_platform.yaml)"
    project_help = "a dg project directory whose ml_platform.ModelComponent models to work on (default: .)"
    p = argparse.ArgumentParser(prog="ml-platform", description=__doc__)
    p.add_argument("--config", help=config_help)
    p.add_argument("--project", help=project_help)
    # --config is accepted after the subcommand too (SUPPRESS keeps a top-level value).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    common.add_argument("--project", default=argparse.SUPPRESS, help=project_help)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    command("up", "Dagster UI + daemon (sensors running) + endpoint").set_defaults(fn=cmd_up)
    r = command("run", "take every pending landing file through the whole graph once")
    r.add_argument("--model")
    r.set_defaults(fn=cmd_run)
    sv = command("serve", "the endpoint alone")
    sv.add_argument("--host")
    sv.add_argument("--port", type=_port)
    sv.add_argument("--workers", type=_count(1))
    sv.set_defaults(fn=cmd_serve)
    sm = command("simulate", "write demo batches into the landing zone")
    sm.add_argument("--model")
    sm.add_argument("--batches", type=_count(0), default=3)
    sm.add_argument("--rows", type=_count(1), default=2000)
    sm.add_argument("--drift", type=_finite, default=0.0, help="0 = none, 1 = strong feature and label drift")
    sm.add_argument("--drift-from", type=int, default=0, help="first batch index that gets the drift")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--format", choices=["csv", "parquet"], default="csv")
    sm.set_defaults(fn=cmd_simulate)
    rb = command("rollback", "move the champion to an earlier gate-passed version")
    rb.add_argument("--model")
    rb.add_argument("--to-version", type=int)
    rb.set_defaults(fn=cmd_rollback)
    ex = command("exclude", "take a bad batch out of every training window (--undo puts it back)")
    ex.add_argument("--model")
    ex.add_argument("--batch", required=True, help="its partition key (see status) or its landing file's name")
    ex.add_argument("--reason", help="why, recorded on the batch and in the audit (required, except with --undo)")
    ex.add_argument("--by", help="who (default: the OS user)")
    ex.add_argument("--undo", action="store_true", help="put the batch back into training")
    ex.set_defaults(fn=cmd_exclude)
    rc = command("reconcile", "check the champion against the registry and repair; --rebuild-registry after a loss")
    rc.add_argument("--model")
    rc.add_argument(
        "--rebuild-registry",
        action="store_true",
        help="re-register the serving store's versions in a lost MLflow registry, under the same numbers",
    )
    rc.set_defaults(fn=cmd_reconcile)
    sc = command("score", "batch-score a CSV/Parquet file with the serving champion (ONNX)")
    sc.add_argument("--model")
    sc.add_argument("file")
    sc.add_argument("--out", help="output Parquet (default: next to the input, *.predictions.parquet)")
    sc.set_defaults(fn=cmd_score)
    wk = command("worker", "a Celery worker that executes runs (when scale_out.celery is configured)")
    wk.add_argument("--name", help="Celery node name (default: ml_platform-<pid>@<host>)")
    wk.add_argument("--loglevel", default="INFO")
    wk.set_defaults(fn=cmd_worker)
    add_commands(command)
    ck = command("check", "CI: train the working tree's code, run the offline gate vs the champion, deploy nothing")
    ck.add_argument("--model")
    ck.set_defaults(fn=cmd_check)  # train | approve | reject
    st = command("status", "champions, versions, gate verdicts, batches")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_status)
    return p


# MLflow's own chatter on a terminal (its INFO lines, a progress bar per artifact download): what
# the commands print says what happened. Set for this process and every one it starts (`up`'s run
# workers too); a user's own setting wins.
QUIET_MLFLOW = {"MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def main(argv: list[str] | None = None) -> int:
    for k, v in QUIET_MLFLOW.items():
        os.environ.setdefault(k, v)
    args = parser().parse_args(argv)
    if args.config and args.project:
        print("give either --config or --project, not both", file=sys.stderr)
        return 2
    if args.config or args.project:  # every process this one starts reads the same configuration
        os.environ[CONFIG_ENV] = os.path.abspath(args.config or args.project)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a full disk and other storage faults: one line, exit 1
        line = storage_failure(e)
        if line is None:
            raise
        report_storage_failure(line, args.command)
        return 1


if __name__ == "__main__":
    sys.exit(main())
