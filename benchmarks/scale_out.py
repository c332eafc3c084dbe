"""Scale-out figures (benchmarks/README.md, "Scale-out"). Three parts, each kept short:

  throughput  ingest batches per minute: the embedded default (SQLite, runs as local processes)
              against PostgreSQL + 1, 2 and 4 Celery workers, under `ml-platform up`; the peak
              memory (RSS) of the platform's processes while the backlog drains
  sensor      the landing sensor's tick time and run-request count at 1,000 / 10,000 files
  sensor-idle the landing sensor over a zone of 100,000 files already ingested: idle tick, cursor
  partitions  where SQLite's dynamic partitions break (one add of N keys; the "too many SQL
              variables" of dagster#16260) and whether PostgreSQL holds there

    .venv/bin/python benchmarks/scale_out.py throughput --modes embedded celery1 celery2 --files 20
    .venv/bin/python benchmarks/scale_out.py sensor --files 1000 10000
    .venv/bin/python benchmarks/scale_out.py sensor-idle --files 100000
    .venv/bin/python benchmarks/scale_out.py partitions --keys 30000 32766 32767 36000 --total 36000

PostgreSQL and Redis are started here (ml_platform_tests/e2e/servers.py: initdb in a temporary
folder, free loopback ports) and stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: the checkout it names runs

from ml_platform_tests.conftest import free_port, write_config  # noqa: E402
from ml_platform_tests.e2e import servers  # noqa: E402
from ml_platform_tests.e2e.helpers import cli, start, stop  # noqa: E402

PASSWORD = "bench-password"
PW_ENV = "ML_PLATFORM_BENCH_PG_PASSWORD"


def _scale_block(pg_port: int, broker: str | None) -> str:
    out = f"scale_out:\n  postgres: {{port: {pg_port}, password_env: {PW_ENV}}}\n"
    return out + (f"  celery: {{broker_url: '{broker}'}}\n" if broker else "")


def _instance(root: Path):
    """The world's instance, once `up` has created its storage (opened while `up` creates the
    tables, both would try to: retried)."""
    import dagster as dg

    for attempt in range(30):
        try:
            return dg.DagsterInstance.from_config(str(root / "state" / "dagster_home"))
        except Exception:  # noqa: BLE001 - "table ... already exists" while `up` creates it
            if attempt == 29:
                raise
            time.sleep(2)


# ---------------------------------------------------------------- throughput
class MemorySampler(threading.Thread):
    """Every ``every`` s: the summed RSS of the given processes and all their descendants (``up``:
    the UI, daemon, code server, endpoint and run workers; Celery workers), with the files ingested
    so far (``progress()``), so a table can show memory against progress."""

    def __init__(self, roots: list[int], progress, every: float = 2.0):
        super().__init__(daemon=True)
        self.roots, self.progress, self.every = list(roots), progress, every
        self.samples: list[tuple[int, float, float]] = []  # (files done, total MB, largest process MB)
        self.stop = threading.Event()

    def _rss(self) -> tuple[float, float]:
        page = os.sysconf("SC_PAGE_SIZE") / 2**20
        parent, rss = {}, {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                parent[int(pid)] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                rss[int(pid)] = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
            except (OSError, IndexError, ValueError):
                continue
        ours = set(self.roots)
        grew = True
        while grew:  # the roots' descendants (some start their own sessions: a tree walk, not a sid)
            new = {p for p, pp in parent.items() if pp in ours and p not in ours}
            ours |= new
            grew = bool(new)
        mbs = [rss[p] for p in ours if p in rss]
        return sum(mbs), max(mbs, default=0.0)

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                done = self.progress()
            except Exception:  # noqa: BLE001 - the instance may be busy; the next sample counts
                continue
            self.samples.append((done, *self._rss()))

    def by_quarter(self, files: int) -> str:
        """Peak total RSS per quarter of the backlog: flat means memory bounded by the run, not the backlog."""
        out = []
        for q in range(4):
            lo, hi = files * q / 4, files * (q + 1) / 4
            got = [t for d, t, _ in self.samples if lo <= d < hi or (q == 3 and d >= hi)]
            out.append(f"{max(got):.0f}" if got else "-")
        return " / ".join(out) + " MB"


def throughput(mode: str, files: int, rows: int, timeout: float, champion_first: bool = False) -> dict:
    """``champion_first``: one 3,000-row file lands first and the backlog only once its champion
    serves, so every file of the backlog is monitored (predictions, drift, performance, the
    challenger refit); the span starts at the backlog. Without it the first file of the backlog
    trains the first champion and the files ingested before it serves skip monitoring."""
    import dagster as dg

    os.environ[PW_ENV] = PASSWORD
    root = Path(tempfile.mkdtemp(prefix=f"mlp-bench-{mode}-"))
    procs = []
    with ExitStack() as stack:
        cfg = write_config(root, port=free_port(), ui_port=free_port())
        workers = {"embedded": 0, "celery1": 1, "celery2": 2, "celery4": 4}[mode]
        if workers:
            pg = stack.enter_context(servers.postgres(PASSWORD))
            broker = stack.enter_context(servers.redis())
            with cfg.open("a") as f:
                f.write(_scale_block(pg.port, broker))
        # training off the clock: on_drift never retrains these stable batches after the first
        if champion_first:
            cli(cfg, "simulate", "--batches", "1", "--rows", "3000", "--seed", "1")
        else:
            cli(cfg, "simulate", "--batches", str(files), "--rows", str(rows), "--seed", "5")
        t0 = time.time()
        try:
            procs.append(start(cfg, "up", log=root / "up.log"))
            procs += [start(cfg, "worker", log=root / f"worker{i}.log") for i in range(workers)]
            while not (root / "state" / "dagster_home" / "dagster.yaml").exists():
                time.sleep(0.5)
            time.sleep(2)
            instance = _instance(root)
            backlog_at = 0.0

            def ingested() -> int:
                return sum(
                    _files(r)
                    for r in instance.get_run_records(dg.RunsFilter(job_name="churn_ingest"))
                    if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS
                    and r.create_timestamp.timestamp() >= backlog_at
                )

            memory = MemorySampler([p.pid for p in procs], ingested)
            if champion_first:
                while not (root / "state" / "serving" / "churn" / "current.json").exists():
                    if time.time() - t0 > timeout:
                        raise SystemExit("no first champion within the timeout")
                    time.sleep(1)
                time.sleep(5)  # the payoff ledger's run after the first deploy
                backlog_at = time.time()
                cli(cfg, "simulate", "--batches", str(files), "--rows", str(rows), "--seed", "5")
            memory.start()
            while time.time() - t0 < timeout:
                recs = [
                    r
                    for r in instance.get_run_records(dg.RunsFilter(job_name="churn_ingest"))
                    if r.create_timestamp.timestamp() >= backlog_at
                ]
                done = [r for r in recs if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS]
                if sum(_files(r) for r in done) >= files:
                    break
                time.sleep(1)
            recs = [
                r
                for r in instance.get_run_records(dg.RunsFilter(job_name="churn_ingest"))
                if r.create_timestamp.timestamp() >= backlog_at
            ]
            trains = instance.get_run_records(dg.RunsFilter(job_name="churn_train"))
        finally:
            if "memory" in locals():
                memory.stop.set()
            for p in reversed(procs):
                stop(p, grace=30)
    done = [r for r in recs if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS]
    progress = [
        line.strip()[-110:] for line in (root / "up.log").read_text(errors="replace").splitlines() if "backlog:" in line
    ]
    shutil.rmtree(root, ignore_errors=True)
    if not done:
        return {"mode": mode, "files": files, "ingested": 0}
    first = min(r.create_timestamp.timestamp() for r in recs)
    last = max(r.end_time for r in done)
    durations = sorted(r.end_time - r.start_time for r in done)
    span = last - first
    ingested = sum(_files(r) for r in done)
    first_train = min((r.create_timestamp.timestamp() for r in trains), default=None)
    return {
        "mode": mode + (" (champion first)" if champion_first else ""),
        "files": files,
        "rows": rows,
        "ingested": ingested,
        "runs": len(done),
        "max files / run": max(_files(r) for r in done),
        "span_s": round(span, 1),
        "files_per_min": round(ingested / span * 60, 1),
        "run_median_s": round(durations[len(durations) // 2], 1),
        "first_run_after_start_s": round(first - t0, 1),
        "first_train_run_after_first_ingest_s": round(first_train - first, 1)
        if first_train and not champion_first
        else None,
        "peak RSS per quarter of the backlog": memory.by_quarter(files),
        "peak RSS, largest process": f"{max((x for _, _, x in memory.samples), default=0):.0f} MB",
        "progress lines": len(progress),
        "last progress line": progress[-1] if progress else "",
    }


def _files(rec) -> int:
    """Landing files a run ingested: a multi-file run says how many (ml_platform/files)."""
    return int(rec.dagster_run.tags.get("ml_platform/files", "1"))


# ---------------------------------------------------------------- landing sensor
def sensor(n_files: int) -> dict:
    """Ticks of `churn_landing_sensor` over ``n_files`` new files until one requests nothing (the
    index hashes at most 500 files a tick; the old sensor took them all in one), adding each
    tick's partitions as the daemon does; then one idle tick, timed, and the cursor's size."""
    import dagster as dg

    from ml_platform.defs.definitions import build_definitions
    from ml_platform.settings import load_settings

    root = Path(tempfile.mkdtemp(prefix="mlp-bench-sensor-"))
    try:
        cfg = write_config(root, extra="automation: {settle_seconds: 0}\n")
        landing = root / "landing"
        header = "customer_id,churned\n"
        for i in range(n_files):  # tiny distinct files: the sensor hashes each one, never parses it
            (landing / f"b{i:06d}.csv").write_text(f"{header}{i},0\n")
        past = time.time() - 60
        for p in landing.iterdir():
            os.utime(p, (past, past))
        s = load_settings(cfg)
        defs = build_definitions(s)
        sensor_def = defs.resolve_sensor_def("churn_landing_sensor")
        (root / "inst").mkdir()
        with dg.instance_for_test(temp_dir=str(root / "inst")) as instance:
            out = {"files": n_files}
            cursor, ticks, busy, requested, runs, add_s = None, 0, 0.0, 0, 0, 0.0
            while True:
                ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
                t = time.perf_counter()
                result = sensor_def(ctx)  # what the daemon evaluates, as tests/test_sensors.py do
                took = time.perf_counter() - t
                cursor = getattr(result, "cursor", None) or ctx.cursor
                reqs = result.run_requests or []
                if not reqs and requested >= n_files:
                    break
                ticks += 1
                busy += took
                runs += len(reqs)
                for req in result.dynamic_partitions_requests or []:
                    requested += len(req.partition_keys)
                    t = time.perf_counter()
                    instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
                    add_s += time.perf_counter() - t
                if ticks > 2 * n_files // 100 + 5:
                    break
            out.update(
                {
                    "ticks to request all": ticks,
                    "their sensor time s": round(busy, 2),
                    "files requested": requested,
                    "run requests": runs,
                    "add partitions s": round(add_s, 2),
                }
            )
            idle = []
            for _ in range(3):
                time.sleep(2.5)  # past the directory-timestamp grace: the steady state
                ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
                t = time.perf_counter()
                result = sensor_def(ctx)
                idle.append(time.perf_counter() - t)
                cursor = getattr(result, "cursor", None) or ctx.cursor
            out["idle tick s (median of 3)"] = round(sorted(idle)[1], 3)
            out["cursor bytes"] = len(cursor or "")
            index = root / "state" / "models" / "churn" / "landing_index.sqlite"
            out["index file KB"] = round(index.stat().st_size / 1024) if index.exists() else None
            return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def sensor_idle(n_files: int) -> dict:
    """A landing zone of ``n_files`` already ingested (the index built by one scan and every file
    marked done, as after a long history): an idle tick, a tick with one new file among them,
    and the cursor's size."""
    import json

    import dagster as dg

    from ml_platform.control.arrivals import index_path
    from ml_platform.control.chain import Chain
    from ml_platform.core.landing_index import LandingIndex, ZoneCursor
    from ml_platform.defs.definitions import build_definitions
    from ml_platform.settings import load_settings

    root = Path(tempfile.mkdtemp(prefix="mlp-bench-idle-"))
    try:
        cfg = write_config(root, extra="automation: {settle_seconds: 0}\n")
        landing = root / "landing"
        past = time.time() - 60
        for i in range(n_files):
            p = landing / f"b{i:06d}.csv"
            p.write_text(f"customer_id,churned\n{i},0\n")
            os.utime(p, (past, past))
        s = load_settings(cfg)
        chain = Chain("churn", s.models["churn"], s)
        cur = ZoneCursor()
        t = time.perf_counter()
        with LandingIndex(index_path(chain)) as ix:
            ix.scan(landing, cur, settle_seconds=0, max_hash=n_files)
            ix.mark_done([f.path.name for f in ix.ready(landing)])
        out = {"files": n_files, "index build s (once)": round(time.perf_counter() - t, 1)}
        time.sleep(2.5)  # past the directory-timestamp grace
        cur.dir_ns = landing.stat().st_mtime_ns
        cursor = json.dumps(cur.to_dict())
        defs = build_definitions(s)
        sensor_def = defs.resolve_sensor_def("churn_landing_sensor")
        (root / "inst").mkdir()
        with dg.instance_for_test(temp_dir=str(root / "inst")) as instance:

            def tick(cursor):
                ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
                t = time.perf_counter()
                result = sensor_def(ctx)
                return time.perf_counter() - t, getattr(result, "cursor", None) or ctx.cursor, result

            idle = []
            for _ in range(3):
                took, cursor, _ = tick(cursor)
                idle.append(took)
            out["idle tick s (median of 3)"] = round(sorted(idle)[1], 4)
            out["cursor bytes"] = len(cursor)
            new = landing / "new.csv"
            new.write_text("customer_id,churned\n-1,1\n")
            os.utime(new, (past, past))
            took, cursor, result = tick(cursor)
            out["tick with 1 new file s"] = round(took, 3)
            out["its run requests"] = len(result.run_requests or [])
            out["index file MB"] = round(index_path(chain).stat().st_size / 2**20, 1)
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- dynamic partitions
def partitions(keys: list[int], total: int, chunk: int) -> list[dict]:
    import dagster as dg

    os.environ["PGPASSWORD"] = PASSWORD
    rows, roots = [], []
    with (
        ExitStack() as cleanup,
        servers.postgres(PASSWORD, databases=[f"parts{i}" for i in range(len(keys) + 1)]) as pg,
    ):

        def pg_instance(db: str):
            root = Path(tempfile.mkdtemp(prefix="mlp-bench-pg-"))
            roots.append(root)
            (root / "dagster.yaml").write_text(
                "telemetry: {enabled: false}\nstorage:\n  postgres:\n    postgres_db:\n"
                f"      {{username: {servers.PG_USER}, hostname: 127.0.0.1, port: {pg.port}, db_name: {db},"
                " password: {env: PGPASSWORD}, scheme: postgresql+psycopg2}\n"
            )
            return dg.DagsterInstance.from_config(str(root))

        def sqlite_instance():
            root = Path(tempfile.mkdtemp(prefix="mlp-bench-sqlite-"))
            roots.append(root)
            return dg.DagsterInstance.from_config(str(root))

        cleanup.callback(lambda: [shutil.rmtree(r, ignore_errors=True) for r in roots])

        def attempt(storage: str, instance, n: int, how: str, fn) -> None:
            t = time.perf_counter()
            try:
                fn()
                ok, err = "ok", ""
            except Exception as e:  # noqa: BLE001 - the figure is whether it breaks
                ok, err = "FAILS", f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"
            rows.append(
                {
                    "storage": storage,
                    "partitions": n,
                    "how": how,
                    "result": ok,
                    "seconds": round(time.perf_counter() - t, 2),
                    "error": err,
                }
            )
            print(rows[-1], flush=True)

        for i, n in enumerate(keys):  # one add_dynamic_partitions call with n new keys
            ks = [f"batch-{j:06d}.csv" for j in range(n)]
            for storage, inst in (("sqlite", sqlite_instance()), ("postgres", pg_instance(f"parts{i}"))):
                attempt(storage, inst, n, "one add of N keys", lambda: inst.add_dynamic_partitions("p", ks))

        # the landing sensor's pattern: small adds until `total`, then what each tick reads
        for storage, inst in (("sqlite", sqlite_instance()), ("postgres", pg_instance(f"parts{len(keys)}"))):

            def grow():
                for start_at in range(0, total, chunk):
                    inst.add_dynamic_partitions("p", [f"batch-{j:06d}.csv" for j in range(start_at, start_at + chunk)])

            attempt(storage, inst, total, f"adds of {chunk} up to N", grow)
            attempt(
                storage,
                inst,
                total,
                "read all keys (each sensor tick)",
                lambda: len(inst.get_dynamic_partitions("p")) == total or 1 / 0,
            )
            attempt(
                storage,
                inst,
                total,
                "re-add all N (a catch-up tick)",
                lambda: inst.add_dynamic_partitions("p", [f"batch-{j:06d}.csv" for j in range(total)]),
            )
    return rows


def _markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    for r in rows[1:]:
        cols += [c for c in r if c not in cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--modes", nargs="+", default=["embedded", "celery1", "celery2"], help="... celery4")
    t.add_argument("--files", type=int, default=20)
    t.add_argument("--rows", type=int, default=250)
    t.add_argument("--timeout", type=float, default=900)
    t.add_argument("--champion-first", action="store_true", help="a first champion serves before the backlog lands")
    s = sub.add_parser("sensor")
    s.add_argument("--files", type=int, nargs="+", default=[1000, 10000, 100000])
    i = sub.add_parser("sensor-idle")
    i.add_argument("--files", type=int, nargs="+", default=[100000])
    d = sub.add_parser("partitions")
    d.add_argument("--keys", type=int, nargs="+", default=[30000, 32766, 32767, 36000])
    d.add_argument("--total", type=int, default=36000)
    d.add_argument("--chunk", type=int, default=1000)
    a = p.parse_args()
    if a.what not in ("sensor", "sensor-idle") and servers.missing_servers():
        raise SystemExit(servers.missing_servers())
    if a.what == "throughput":
        rows = [throughput(m, a.files, a.rows, a.timeout, a.champion_first) for m in a.modes]
    elif a.what == "sensor":
        rows = [sensor(n) for n in a.files]
    elif a.what == "sensor-idle":
        rows = [sensor_idle(n) for n in a.files]
    else:
        rows = partitions(a.keys, a.total, a.chunk)
    print(_markdown(rows))


if __name__ == "__main__":
    main()
