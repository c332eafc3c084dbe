"""Do big requests starve single-row traffic? Single-row latency on one keep-alive connection,
alone and while other clients send 100k-row requests, run by hand:

    .venv/bin/python benchmarks/serving_big_requests.py [--seconds 15] [--big-clients 2] [--rows 100000]
    .venv/bin/python benchmarks/serving_big_requests.py --src /path/to/other/checkout   # before/after

Builds the small classification model of ``serving_bench.py`` (4 features + an id column,
HistGradientBoosting), publishes it to a temporary model store, raises
``serving.max_body_bytes`` to 64 MB and starts ``python -m ml_platform.serving`` (one
worker) on a free loopback port; with ``--src`` the server runs from that checkout (its
``ml_platform`` package first on ``PYTHONPATH``), e.g. a ``git worktree`` of an older commit.

Then, for ``--seconds`` each:

1. ``alone``: one client sends single-row ``dataframe_split`` requests back to back on one
   keep-alive connection (raw HTTP/1.1, latency per request);
2. ``with big``: the same, while ``--big-clients`` processes each send ``--rows``-row
   ``dataframe_records`` bodies (~9 MB for 100k rows, encoded once) back to back.

Prints single-row requests, p50 / p99 / max latency per phase, and the big requests done
(with their mean latency). The load average is printed too: on a 2-core machine the big
clients, the probe and the server share the cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from serving_bench import build_store, free_port, stop_server, wait_ready  # noqa: E402

PATH = "/models/bench/invocations"
ONE = {
    "dataframe_split": {"columns": ["id", "age", "income", "plan", "region"], "data": [[17, 42.0, 5100.5, "gold", 3]]}
}


def request_bytes(body: bytes) -> bytes:
    return (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    """(status, body) of one response; ``buf`` keeps bytes read past it."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(rest) < length:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        rest += chunk
    buf[:] = rest[length:]
    return int(head.split(b" ", 2)[1]), rest[:length]


def big_client(port: int, rows: int, stop_at: float, out) -> None:
    """A process: ``rows``-row requests back to back until ``stop_at``; puts its latencies."""
    rng = np.random.default_rng(os.getpid())
    recs = [
        {"id": i, "age": float(a), "income": float(b), "plan": p, "region": int(r)}
        for i, (a, b, p, r) in enumerate(
            zip(
                rng.integers(18, 90, rows),
                rng.lognormal(8, 1, rows).round(2),
                rng.choice(["free", "gold", "pro"], rows),
                rng.integers(1, 9, rows),
            )
        )
    ]
    req = request_bytes(json.dumps({"dataframe_records": recs}).encode())
    lat, errors = [], 0
    sock = socket.create_connection(("127.0.0.1", port))
    buf = bytearray()
    while time.time() < stop_at:
        t0 = time.perf_counter()
        sock.sendall(req)
        status, _ = read_response(sock, buf)
        lat.append(time.perf_counter() - t0)
        errors += status != 200
    sock.close()
    out.put((len(req), lat, errors))


def probe(port: int, seconds: float) -> dict:
    req = request_bytes(json.dumps(ONE).encode())
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    lat, errors = [], 0
    stop_at = time.perf_counter() + seconds
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        sock.sendall(req)
        status, _ = read_response(sock, buf)
        lat.append(time.perf_counter() - t0)
        errors += status != 200
    sock.close()
    a = np.array(lat) * 1000
    return {
        "n": len(a),
        "p50": float(np.percentile(a, 50)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
        "errors": errors,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--big-clients", type=int, default=2)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--src", help="run the server from this checkout (default: this one)")
    args = ap.parse_args()
    import yaml

    tmp = Path(tempfile.mkdtemp(prefix="serving_big_"))
    proc = None
    try:
        cfg_path = build_store(tmp)
        raw = yaml.safe_load(cfg_path.read_text())
        raw["serving"] = {"max_body_bytes": 64 << 20, "sample_rows_per_second": 100}
        cfg_path.write_text(yaml.safe_dump(raw))
        port = free_port()
        env = dict(os.environ)
        if args.src:
            env["PYTHONPATH"] = str(Path(args.src).resolve()) + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ml_platform.serving",
                "--config",
                str(cfg_path),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=open(tmp / "server.log", "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=tmp,
        )
        wait_ready(port)
        print(f"server from {args.src or HERE.parent}; load average {os.getloadavg()[0]:.2f}")
        probe(port, 1.0)  # warm-up
        results = {}
        la = os.getloadavg()[0]
        results["alone"] = {**probe(port, args.seconds), "load": la}
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        stop_at = time.time() + args.seconds + 3
        bigs = [ctx.Process(target=big_client, args=(port, args.rows, stop_at, out)) for _ in range(args.big_clients)]
        for p in bigs:
            p.start()
        time.sleep(3)  # they build and send their first body
        la = os.getloadavg()[0]
        results["with big"] = {**probe(port, args.seconds), "load": la}
        big = [out.get(timeout=600) for _ in bigs]
        for p in bigs:
            p.join(60)
        size = big[0][0] if big else 0
        big_lat = [x for _, lat, _ in big for x in lat]
        big_err = sum(e for _, _, e in big)
        print(
            f"{'phase':10s} {'single-row requests':>20s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s} "
            f"{'errors':>7s} {'load':>5s}"
        )
        for k, r in results.items():
            print(
                f"{k:10s} {r['n']:>20,d} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['max']:>8.1f} "
                f"{r['errors']:>7d} {r['load']:>5.2f}"
            )
        print(
            f"big requests ({args.big_clients} clients, {args.rows:,} rows, {size / 1e6:.1f} MB each): "
            f"{len(big_lat)} done in ~{args.seconds + 3:.0f} s, mean {np.mean(big_lat) * 1000 if big_lat else 0:.0f} ms, "  # noqa: E501
            f"errors {big_err}"
        )
    finally:
        stop_server(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
