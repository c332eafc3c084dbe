"""Time to recovery under `ml-platform up`: one drifted, labelled file lands -> a new champion
answers on the endpoint, with the time split by stage from the Dagster instance.

Each repetition is a fresh world (temp dir, free ports for the UI and the endpoint, default
intervals unless --automation is given):

  1. `ml-platform up` seeds 3 demo batches; wait until a champion serves and the platform
     is idle (every batch decided, no run queued or in progress);
  2. land ONE drifted file (``generate_batch(rows, drift=1.0)``, labelled; ``--files N``: N
     of them together) atomically: written under a tmp name, then renamed;
  3. poll ``POST /models/churn/invocations`` until the ``X-Model-Version`` header changes;
  4. split the time with run records (``create_timestamp``, ``start_time``, ``end_time``),
     run events (dequeue, launch) and step stats of the ingest and train runs.

    .venv/bin/python benchmarks/time_to_recovery.py                      # 3 repetitions, defaults
    .venv/bin/python benchmarks/time_to_recovery.py --repeat 1 --automation \\
        "{landing_interval_seconds: 1, retrain_interval_seconds: 1, settle_seconds: 0.5}"
    .venv/bin/python benchmarks/time_to_recovery.py --markdown           # README table

Only processes this script starts are stopped, by their process group.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from ml_platform.core.simulate import generate_batch
from ml_platform_tests.conftest import free_port, write_config
from ml_platform_tests.e2e.helpers import ROW

MODEL = "churn"


def start_up(config: Path, log: Path) -> subprocess.Popen:
    f = open(log, "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "ml_platform", "--config", str(config), "up"],
        stdout=f,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=config.parent,
    )


def stop_up(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group we started; `up` stops its children within ~15 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(40)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def served_version(base: str) -> int | None:
    try:
        r = httpx.post(f"{base}/models/{MODEL}/invocations", json={"dataframe_records": [ROW]}, timeout=5)
    except httpx.HTTPError:
        return None
    v = r.headers.get("x-model-version")
    return int(v) if r.status_code == 200 and v else None


def wait(fn, timeout: float, interval: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def idle(instance, model_dir: Path, expected_batches: int) -> bool:
    import dagster as dg

    from ml_platform.core import catalog

    recs = catalog.read_records(model_dir)
    if len(recs) < expected_batches or any(not r.decided for r in recs):
        return False
    busy = instance.get_runs(
        filters=dg.RunsFilter(
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ]
        )
    )
    return not busy


def land_atomically(landing: Path, name: str, df) -> tuple[Path, float]:
    tmp, final = landing / f".{name}.tmp", landing / name
    df.to_csv(tmp, index=False)
    os.replace(tmp, final)
    return final, time.time()


def run_events(instance, run_id: str) -> dict[str, float]:
    """First timestamp of each run-lifecycle event of the run."""
    out = {}
    for rec in instance.all_logs(run_id):
        ev = rec.dagster_event
        name = ev.event_type_value.replace("PIPELINE_", "RUN_") if ev is not None else ""
        if name in ("RUN_ENQUEUED", "RUN_DEQUEUED", "RUN_STARTING", "RUN_START", "RUN_SUCCESS", "RUN_FAILURE"):
            out.setdefault(name, rec.timestamp)
    return out


def steps(instance, run_id: str) -> dict[str, tuple[float, float]]:
    return {
        s.step_key.split("__", 1)[1]: (s.start_time, s.end_time)
        for s in instance.get_run_step_stats(run_id)
        if s.start_time and s.end_time
    }


def breakdown(instance, src: Path, landed: float, mtime: float, served_at: float, old: int, new: int | None) -> dict:
    import dagster as dg

    from ml_platform.names import TAG_BATCH, TAG_SOURCE

    ing = instance.get_run_records(filters=dg.RunsFilter(tags={TAG_SOURCE: str(src)}))
    partition = ing[0].dagster_run.tags.get("dagster/partition") if ing else None
    if not ing:  # a multi-file run: its run config names each partition's file
        for rec in instance.get_run_records(filters=dg.RunsFilter(job_name=f"{MODEL}_ingest")):
            files = rec.dagster_run.run_config.get("ops", {}).get(f"{MODEL}__raw_batch", {}).get("config", {})
            partition = next((k for k, f in files.get("files", {}).items() if f["path"] == str(src)), None)
            if partition:
                ing = [rec]
                break
    if not ing:
        return {"error": "no ingest run for the drifted file"}
    ing = ing[0]
    out = {
        "partition": partition,
        "files_in_its_run": int(ing.dagster_run.tags.get("ml_platform/files", "1")),
        "champion_before": old,
        "champion_after": new,
        "total": (served_at - landed) if served_at else None,
    }
    ie, ist = run_events(instance, ing.dagster_run.run_id), steps(instance, ing.dagster_run.run_id)
    ing_created = ing.create_timestamp.timestamp()
    out["sensor_wait"] = ing_created - landed
    # QueuedRunCoordinator: created -> ENQUEUED (submitted) -> STARTING (dequeued and launched)
    # -> START (the run worker process is up and has loaded the code).
    out["ingest_dequeue"] = ie["RUN_STARTING"] - ing_created
    out["ingest_worker_start"] = ing.start_time - ie["RUN_STARTING"]
    out["ingest_validation"] = sum(ist[k][1] - ist[k][0] for k in ("raw_batch", "validated_batch") if k in ist)
    out["ingest_monitoring"] = sum(
        ist[k][1] - ist[k][0] for k in ("batch_predictions", "drift_report", "champion_performance") if k in ist
    )
    out["ingest_other"] = (ing.end_time - ing.start_time) - out["ingest_validation"] - out["ingest_monitoring"]
    tr = instance.get_run_records(filters=dg.RunsFilter(tags={TAG_BATCH: partition}))
    if not tr:
        out["error"] = "the drifted batch did not trigger a train run"
        return out
    tr = tr[-1]
    te, tst = run_events(instance, tr.dagster_run.run_id), steps(instance, tr.dagster_run.run_id)
    tr_created = tr.create_timestamp.timestamp()
    out["trigger"] = tr.dagster_run.tags.get("ml_platform/trigger")
    out["retrain_sensor_wait"] = tr_created - ing.end_time
    out["train_dequeue"] = te["RUN_STARTING"] - tr_created
    out["train_worker_start"] = tr.start_time - te["RUN_STARTING"]
    out["training"] = sum(tst[k][1] - tst[k][0] for k in ("training_set", "candidate_model") if k in tst)
    out["gate"] = sum(e - s for k, (s, e) in tst.items() if k.startswith("candidate_model_"))
    out["deploy"] = (tst["deployed_model"][1] - tst["deployed_model"][0]) if "deployed_model" in tst else None
    out["train_other"] = (tr.end_time - tr.start_time) - out["training"] - out["gate"] - (out["deploy"] or 0)
    if served_at:
        out["run_end_to_served"] = served_at - tr.end_time
    out["file_mtime_to_landed"] = landed - mtime
    return out


STAGES = [
    ("sensor_wait", "landing sensor wait (file lands -> ingest run created)"),
    ("ingest_dequeue", "ingest run created -> launched (queue, dequeue tick)"),
    ("ingest_worker_start", "ingest run launched -> started (run worker process start-up)"),
    ("ingest_validation", "ingest steps: raw copy + validation"),
    ("ingest_monitoring", "ingest steps: predictions, drift, performance"),
    ("ingest_other", "ingest run: other (between steps, run end)"),
    ("retrain_sensor_wait", "retrain sensor wait (ingest end -> train run created)"),
    ("train_dequeue", "train run created -> launched (queue, dequeue tick)"),
    ("train_worker_start", "train run launched -> started (run worker process start-up)"),
    ("training", "training (training_set + candidate_model)"),
    ("gate", "gate (4 blocking check steps)"),
    ("deploy", "deploy (deployed_model step)"),
    ("train_other", "train run: other (between steps, run end)"),
    ("run_end_to_served", "endpoint swap (train run end -> new version answers; < 0: before run end)"),
    ("total", "total: file lands -> new champion serving"),
    ("files_in_its_run", "files in the drifted file's ingest run"),
    ("first_champion_after_up", "first champion after `up` starts (3 demo batches)"),
]


def one(args, rep: int) -> dict:
    from dagster import DagsterInstance

    root = Path(tempfile.mkdtemp(prefix="ttr-"))
    port, ui_port = free_port(), free_port()
    config = write_config(
        root,
        port=port,
        ui_port=ui_port,
        poll_seconds=None,
        extra=f"automation: {args.automation}\n" if args.automation else "",
    )
    os.environ["DAGSTER_HOME"] = str(root / "state" / "dagster_home")
    base = f"http://127.0.0.1:{port}"
    proc = start_up(config, root / "up.log")
    t0 = time.time()
    try:
        old = wait(lambda: served_version(base), args.first_timeout, 0.5, "the first champion")
        first = time.time() - t0
        (root / "state" / "dagster_home").mkdir(parents=True, exist_ok=True)
        instance = DagsterInstance.get()
        wait(lambda: idle(instance, root / "state" / "models" / MODEL, 3), 300, 0.5, "an idle platform")
        old = served_version(base)
        settled = time.time() - t0
        time.sleep(args.quiet_seconds)  # let sensors tick on an idle platform, as in steady state
        load = os.getloadavg()[0]
        # --files N: N drifted files land together (the stage split follows the first one)
        landed_files = [
            land_atomically(
                root / "landing",
                f"drifted-{rep}-{i}.csv",
                generate_batch(
                    args.rows, seed=4242 + 100 * rep + i, drift=args.drift, start_id=50_000_000 + 1_000_000 * i
                ),
            )
            for i in range(args.files)
        ]
        src, landed = landed_files[0]
        mtime = src.stat().st_mtime
        served_at, new = None, None
        deadline = landed + args.timeout
        while time.time() < deadline:
            v = served_version(base)
            if v is not None and v != old:
                served_at, new = time.time(), v
                break
            time.sleep(args.poll)
        try:  # the endpoint may swap before the train run has ended: let every run finish
            wait(lambda: idle(instance, root / "state" / "models" / MODEL, 3 + args.files), 60, 0.5, "the runs to end")
        except TimeoutError:
            pass
        res = breakdown(instance, src, landed, mtime, served_at, old, new)
        res.update(
            first_champion_after_up=first,
            idle_after_up=settled,
            load_average=load,
            world=str(root) if args.keep else None,
        )
        if served_at is None:
            from ml_platform.core import catalog

            rec = next(
                (
                    r
                    for r in catalog.read_records(root / "state" / "models" / MODEL)
                    if r.partition == res.get("partition")
                ),
                catalog.BatchRecord(""),
            )
            res["no_recovery"] = {
                "decision": rec.decision and rec.decision.to_dict(),
                "drift": rec.drift,
                "performance": rec.performance,
            }
        return res
    finally:
        stop_up(proc)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def fmt(v) -> str:
    return "–" if v is None else f"{v:.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rows", type=int, default=2000, help="rows of the drifted file (demo batches: 2000)")
    ap.add_argument("--drift", type=float, default=1.0)
    ap.add_argument("--files", type=int, default=1, help="drifted files landed together")
    ap.add_argument(
        "--automation",
        default="",
        help="YAML flow mapping for models.churn.automation, e.g. '{landing_interval_seconds: 1}'",
    )
    ap.add_argument("--quiet-seconds", type=float, default=10.0)
    ap.add_argument("--poll", type=float, default=0.2, help="endpoint polling interval")
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--first-timeout", type=float, default=300, help="wait this long for the first champion")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", help="write every repetition's figures to this file")
    ap.add_argument("--keep", action="store_true", help="keep each world's temp dir (logs, instance)")
    args = ap.parse_args(argv)

    results = []
    for rep in range(args.repeat):
        r = one(args, rep)
        results.append(r)
        print(json.dumps(r, indent=1, default=str), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    ok = [r for r in results if r.get("total") is not None]
    print(
        f"\nautomation: {args.automation or 'defaults'}; {args.files} drifted file(s) of {args.rows} rows; "
        f"{len(ok)}/{len(results)} recovered; load average at landing: "
        + ", ".join(f"{r['load_average']:.2f}" for r in results)
    )
    if args.markdown:
        cols = " | ".join(f"run {i + 1}" for i in range(len(results)))
        print(f"| stage | {cols} | median |\n|---|" + "---:|" * (len(results) + 1))
    for key, label in STAGES:
        vals = [r.get(key) for r in results]
        got = [v for v in vals if v is not None]
        med = statistics.median(got) if got else None
        if args.markdown:
            print(f"| {label} | " + " | ".join(fmt(v) for v in vals) + f" | {fmt(med)} |")
        else:
            print(f"{label:62s} " + " ".join(f"{fmt(v):>7s}" for v in vals) + f"   median {fmt(med)} s")
    for r in results:
        if "no_recovery" in r:
            print(
                f"NO RECOVERY ({r['world'] or 'use --keep to keep the world'}): {json.dumps(r['no_recovery'], default=str)[:600]}"  # noqa: E501
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
