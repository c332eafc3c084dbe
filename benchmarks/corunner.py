"""What a process running beside an endpoint worker costs its p99 on this machine, run by hand:

    .venv/bin/python benchmarks/corunner.py --policy idle --cpu 1 --rounds 8

One endpoint worker (the ``serving_bench.py`` model) pinned to CPU 1, wrk (required) at one
connection pinned to CPU 0; in alternating rounds (ABBA) a busy-looping Python process runs beside
it on ``--cpu`` at ``--policy`` (``idle``: SCHED_IDLE; ``batch``: SCHED_BATCH, nice 19; ``nice``:
SCHED_OTHER, nice 19) or does not. The shadow scorer's placement (``serving/staging.py``: copies
scored in the worker, not beside it) follows from these figures (benchmarks/README.md "Shadow cost").
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serving_bench import ROWS, build_store, free_port, run_wrk, stop_server, wait_ready  # noqa: E402
from serving_shadow import parse_wrk  # noqa: E402

POLICIES = {"idle": ["chrt", "-i", "0"], "batch": ["chrt", "-b", "0", "nice", "-n", "19"], "nice": ["nice", "-n", "19"]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", choices=sorted(POLICIES), default="idle")
    ap.add_argument("--cpu", default="1", help="where the busy process runs (the worker is on 1, wrk on 0)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=3)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk is required (apt-get install wrk)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="corunner_"))
    proc = None
    try:
        cfg = build_store(tmp)
        port = free_port()
        proc = subprocess.Popen(
            ["taskset", "-c", "1", sys.executable, "-m", "ml_platform.serving", "--config", str(cfg)]
            + ["--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_ready(port)
        path, body = ROWS["mlflow"]
        run_wrk(port, path, body, 1, 2, cpus="0")  # warm-up
        res: dict = {}
        for r in range(args.rounds):
            for mode in ("alone", "beside") if r % 2 == 0 else ("beside", "alone"):
                busy = None
                if mode == "beside":
                    cmd = ["taskset", "-c", args.cpu, *POLICIES[args.policy], sys.executable, "-c", "while 1: pass"]
                    busy = subprocess.Popen(cmd)
                    time.sleep(0.5)
                try:
                    rps, p99 = parse_wrk(run_wrk(port, path, body, 1, args.seconds, cpus="0"))
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
                res.setdefault(mode, []).append((rps, p99))
                print(f"round {r + 1}  {mode:<6}  {rps:>7,.0f} req/s  p99 {p99:.3f} ms", flush=True)
        a, b = res["alone"], res["beside"]
        paired = statistics.median(y[1] / x[1] - 1 for x, y in zip(a, b, strict=True))
        med = {m: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for m, v in res.items()}
        print(
            f"median: alone {med['alone'][0]:,.0f} req/s, p99 {med['alone'][1]:.3f} ms; beside ({args.policy} on "
            f"CPU {args.cpu}) {med['beside'][0]:,.0f} req/s, p99 {med['beside'][1]:.3f} ms; paired p99 {paired:+.0%}"
        )
    finally:
        stop_server(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
