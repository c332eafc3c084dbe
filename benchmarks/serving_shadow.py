"""The champion's cost of a shadow: single-row req/s and p99 with a shadow mirroring every request,
side by side with direct serving, run by hand:

    nice -n 15 .venv/bin/python benchmarks/serving_shadow.py [--seconds 10] [--rounds 3]
    .venv/bin/python benchmarks/serving_shadow.py --in-process 20000 --rounds 4   # no HTTP
    .venv/bin/python benchmarks/serving_shadow.py --pin --conns 1 --seconds 4 --rounds 12   # one client
    .venv/bin/python benchmarks/serving_shadow.py --pin --aa --seconds 3 --rounds 16   # both modes direct

Builds the ``serving_bench.py`` model as the champion (v1) and a second fit as the candidate (v2),
starts one endpoint worker, and measures with ``wrk`` (required: apt-get install wrk) in alternating
rounds: direct (nothing staged) and shadow (v2 staged with ``share: 1``, every request mirrored),
in ABBA order, at 1 and 32 connections. The two modes run on the same process, one after the other, so the
machine's load hits both alike; the table shows each round and the median. After each shadow round
the endpoint's own counters say how many requests were mirrored and how many dropped (overload),
and the shadow scorer's CPU per request (a process of its own, ``serving/shadow_scorer.py``) is
read from ``/proc`` beside the server's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from serving_bench import ROWS, bench_frame, build_store, free_port, run_wrk, stop_server, wait_ready  # noqa: E402


def publish_candidate(cfg_path: Path) -> None:
    """v2: the same features, fitted on another sample (a real second model, same cost class)."""
    from ml_platform.core.export import export_onnx, serving_metadata
    from ml_platform.core.training import fit
    from ml_platform.serving.store import ModelStore
    from ml_platform.settings import load_settings

    settings = load_settings(cfg_path)
    cfg = settings.models["bench"]
    df = bench_frame(seed=1)
    pipe = fit(df, cfg)
    smoke = [{"age": 40.0, "income": 3000.0, "plan": "pro", "region": 2}]
    meta = serving_metadata(pipe, cfg, name="bench", version=2, metrics={}, smoke_rows=smoke)
    ModelStore(settings.serving_dir).publish("bench", 2, export_onnx(pipe, cfg), meta)


def parse_wrk(out: str) -> tuple[float, float]:
    """-> (req/s, p99 ms)."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errs:
        raise RuntimeError(f"{errs.group(1)} failed requests:\n{out}")
    return rps, p99


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc; the server's cost, whatever the load)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds(pid: int) -> float:
    """CPU time so far of ``pid``'s live children (the shadow scorer: a process of its own)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            try:
                total += cpu_seconds(int(kid))
            except OSError:
                pass
    return total


def staged_info(port: int) -> dict | None:
    return httpx.get(f"http://127.0.0.1:{port}/v2/models/bench", timeout=5).json().get("staged")


def set_mode(store, port: int, mode: str, aa: bool = False) -> None:
    """``aa``: the "shadow" rounds serve directly too (an A/A run: this machine's noise floor)."""
    if mode == "shadow" and not aa:
        store.stage("bench", {"version": 2, "mode": "shadow", "share": 1.0, "champion": 1})
    else:
        store.unstage("bench")
    httpx.post(f"http://127.0.0.1:{port}/admin/reload", timeout=30)
    got = staged_info(port)
    assert (got is not None) == (mode == "shadow" and not aa), got
    for _ in range(300):  # the scorer process starts (imports, loads the candidate) before the round
        if got is None or (staged_info(port) or {}).get("scorer") == "ready":
            break
        time.sleep(0.1)


def in_process(requests: int, rounds: int) -> int:
    """The app's ``score`` called ``requests`` times per round on one event loop with the staging
    task running (no HTTP, no wrk: steadier on a busy machine), direct and shadow alternating.
    CPU per request is this process's (``process_time``; a scorer is another process); "loop p99"
    is the 99th percentile of the time between two answers, i.e. what the staging work between
    requests adds."""
    import asyncio
    import gc

    import orjson

    from ml_platform.serving.app import create_app
    from ml_platform.serving.store import ModelStore
    from ml_platform.settings import load_settings

    tmp = Path(tempfile.mkdtemp(prefix="serving_shadow_"))
    try:
        cfg_path = build_store(tmp)
        publish_candidate(cfg_path)
        settings = load_settings(cfg_path)
        store = ModelStore(settings.serving_dir)
        state = create_app(settings.serving_dir, ["bench"], stage_dir=tmp / "stage", poll_seconds=3600).state.serving
        msg = {"type": "http.request", "body": orjson.dumps(ROWS["mlflow"][1]), "more_body": False}

        async def receive():
            return msg

        async def block(n: int) -> tuple[float, float]:
            gaps, perf = [], time.perf_counter
            c0, last = time.process_time(), perf()
            for _ in range(n):
                await state.score("bench", "mlflow", b"application/json", None, receive, [1])
                await asyncio.sleep(0)  # what a server does between requests: other tasks run
                now = perf()
                gaps.append(now - last)
                last = now
            gaps.sort()
            return (time.process_time() - c0) / n * 1e6, gaps[int(0.99 * n)] * 1e6

        async def run() -> dict:
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)  # as the app's lifespan does
            task = asyncio.create_task(state.stages.run_forever(3600))
            out: dict = {}
            for r in range(rounds):
                for mode in ("direct", "shadow") if r % 2 == 0 else ("shadow", "direct"):  # ABBA
                    if mode == "shadow":
                        store.stage("bench", {"version": 2, "mode": "shadow", "share": 1.0, "champion": 1})
                    else:
                        store.unstage("bench")
                    await state.stages.follow(state.slots["bench"], force=True)
                    await asyncio.sleep(2)  # the scorer starts
                    await block(2000)
                    cpu, p99 = await block(requests)
                    out.setdefault(mode, []).append((cpu, p99))
                    print(f"round {r + 1}  {mode:<6}  CPU {cpu:.1f} us/request  loop p99 {p99:.1f} us", flush=True)
            task.cancel()
            await state.stages.close()
            return out

        out = asyncio.run(run())
        base = statistics.median(x[0] for x in out["direct"])
        for mode, rows in out.items():
            cpu = statistics.median(x[0] for x in rows)
            p99 = statistics.median(x[1] for x in rows)
            print(f"median  {mode:<6}  CPU {cpu:.1f} us/request ({cpu / base - 1:+.1%})  loop p99 {p99:.1f} us")
        paired = [s[0] / d[0] - 1 for s, d in zip(out["shadow"], out["direct"], strict=True)]
        print(f"paired (median of each round's shadow/direct): CPU {statistics.median(paired):+.1%}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=4)  # even: ABBA
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--conns", default="1,32", help="connection counts, comma-separated (default 1,32)")
    ap.add_argument("--in-process", type=int, metavar="REQUESTS", help="no HTTP: see in_process()")
    ap.add_argument("--aa", action="store_true", help="A/A: nothing staged in either mode (the noise floor)")
    ap.add_argument(
        "--pin",
        action="store_true",
        help="wrk on CPU 0, the endpoint (worker and its scorer) on CPU 1, as with a client on another machine",
    )
    args = ap.parse_args()
    if args.aa and args.in_process:
        ap.error("--aa is for the wrk rounds, not --in-process")
    if args.in_process:
        return in_process(args.in_process, args.rounds)
    conn_list = [int(c) for c in args.conns.split(",")]
    if not shutil.which("wrk"):
        print("wrk is required (apt-get install wrk)", file=sys.stderr)
        return 2
    from ml_platform.serving.store import ModelStore
    from ml_platform.settings import load_settings

    tmp = Path(tempfile.mkdtemp(prefix="serving_shadow_"))
    proc = None
    try:
        cfg_path = build_store(tmp)
        publish_candidate(cfg_path)
        settings = load_settings(cfg_path)
        store = ModelStore(settings.serving_dir)
        port = free_port()
        proc = subprocess.Popen(
            [*(["taskset", "-c", "1"] if args.pin else []), sys.executable, "-m", "ml_platform.serving"]
            + ["--config", str(cfg_path), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_ready(port)
        path, body = ROWS["mlflow"]
        run_wrk(port, path, body, 32, 2)  # warm-up
        results: dict = {}
        for r in range(args.rounds):
            for conns in conn_list:
                # ABBA: a machine that speeds up or slows down over the run favours neither mode
                for mode in ("direct", "shadow") if r % 2 == 0 else ("shadow", "direct"):
                    set_mode(store, port, mode, aa=args.aa)
                    before = staged_info(port) or {}
                    cpu0, side0 = cpu_seconds(proc.pid), children_cpu_seconds(proc.pid)
                    out = run_wrk(port, path, body, conns, args.seconds, cpus="0" if args.pin else None)
                    time.sleep(0.3)  # the last mirrored requests handed over and counted
                    cpu = cpu_seconds(proc.pid) - cpu0
                    for _ in range(100):  # the scorer catches up (its CPU counts too)
                        got = staged_info(port) or {}
                        if got.get("scored", 0) >= got.get("mirrored", 0):
                            break
                        time.sleep(0.1)
                    side = children_cpu_seconds(proc.pid) - side0
                    rps, p99 = parse_wrk(out)
                    n = int(re.search(r"(\d+) requests in", out).group(1))
                    us = cpu / n * 1e6
                    side_us = side / n * 1e6
                    after = staged_info(port) or {}
                    mirrored = (after.get("mirrored", 0) - before.get("mirrored", 0)) if mode == "shadow" else None
                    dropped = (after.get("dropped", 0) - before.get("dropped", 0)) if mode == "shadow" else None
                    results.setdefault((conns, mode), []).append((rps, p99, mirrored, dropped, us, side_us))
                    extra = (
                        f"   mirrored {mirrored:,}  dropped {dropped:,}  scorer CPU {side_us:.1f} us/request"
                        if mode == "shadow"
                        else ""
                    )
                    label = "direct" if args.aa else mode  # A/A: the second mode serves directly too
                    print(
                        f"round {r + 1}  {conns:>2} conn  {label:<6}  {rps:>9,.0f} req/s  p99 {p99:.3f} ms  "
                        f"server CPU {us:.1f} us/request{extra}"
                    )
        print()
        print(
            "| connections | mode | req/s (median) | p99 ms (median) | server CPU us/request (median) | vs direct "
            "| mirrored / dropped | scorer CPU us/request (median) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for conns in conn_list:
            base = results[(conns, "direct")]
            b_rps = statistics.median(x[0] for x in base)
            b_p99 = statistics.median(x[1] for x in base)
            b_us = statistics.median(x[4] for x in base)
            for mode in ("direct", "shadow"):
                rows = results[(conns, mode)]
                rps = statistics.median(x[0] for x in rows)
                p99 = statistics.median(x[1] for x in rows)
                us = statistics.median(x[4] for x in rows)
                # each round's shadow against the same round's direct, then the median of those
                paired = [(s[0] / d[0] - 1, s[1] / d[1] - 1) for s, d in zip(rows, base, strict=True)]
                vs = (
                    "-"
                    if mode == "direct"
                    else f"req/s {rps / b_rps - 1:+.1%}, p99 {p99 / b_p99 - 1:+.1%}, CPU {us / b_us - 1:+.1%}; "
                    f"paired: req/s {statistics.median(x[0] for x in paired):+.1%}, "
                    f"p99 {statistics.median(x[1] for x in paired):+.1%}"
                )
                md = "-" if mode == "direct" else f"{sum(x[2] for x in rows):,} / {sum(x[3] for x in rows):,}"
                side = "-" if mode == "direct" else f"{statistics.median(x[5] for x in rows):.1f}"
                print(f"| {conns} | {mode} | {rps:,.0f} | {p99:.3f} | {us:.1f} | {vs} | {md} | {side} |")
        print(json.dumps({f"{c}-{m}": v for (c, m), v in results.items()}))
    finally:
        stop_server(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
