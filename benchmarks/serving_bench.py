"""Throughput and latency of the scoring endpoint, single-row requests, run by hand:

    .venv/bin/python benchmarks/serving_bench.py [--seconds 10] [--workers 1] [--protocol mlflow|v2]

Builds a small classification model (4 features, HistGradientBoosting, 200 trees),
publishes it to a temporary model store, starts ``python -m ml_platform.serving`` on a
free loopback port, and measures with ``wrk`` when it is installed (apt-get install wrk),
else with a built-in asyncio keep-alive client (slower: on a small machine the client
then competes with the server for CPU). Goal: >= 5,000 req/s per worker at 32
connections, p50 < 0.3 ms at 1 connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROWS = {
    "mlflow": (
        "/models/bench/invocations",
        {
            "dataframe_split": {
                "columns": ["id", "age", "income", "plan", "region"],
                "data": [[17, 42.0, 5100.5, "gold", 3]],
            }
        },
    ),
    "v2": (
        "/v2/models/bench/infer",
        {
            "inputs": [
                {"name": "age", "shape": [1], "datatype": "FP32", "data": [42.0]},
                {"name": "income", "shape": [1], "datatype": "FP32", "data": [5100.5]},
                {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["gold"]},
                {"name": "region", "shape": [1], "datatype": "INT64", "data": [3]},
            ]
        },
    ),
}


def bench_frame(seed: int, n: int = 5000) -> pd.DataFrame:
    """The benchmark model's training data (features age, income, plan, region; target y)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "id": np.arange(n),
            "age": rng.integers(18, 90, n).astype(float),
            "income": rng.lognormal(8, 1, n),
            "plan": rng.choice(["free", "gold", "pro"], n),
            "region": rng.integers(1, 9, n),
        }
    )
    df["y"] = ((df.age / 90 + (df.plan == "gold") + rng.normal(0, 0.5, n)) > 1).astype(int)
    return df


def stop_server(proc: subprocess.Popen | None) -> None:
    """SIGTERM to the endpoint's process group, SIGKILL after 15 s."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def build_store(root: Path) -> Path:
    import yaml

    from ml_platform.core.export import export_onnx, serving_metadata
    from ml_platform.core.training import fit
    from ml_platform.serving.store import ModelStore
    from ml_platform.settings import load_settings

    cfg_raw = {
        "storage_dir": "state",
        "models": {
            "bench": {
                "landing_dir": "landing",
                "target": "y",
                "task": "classification",
                "id_column": "id",
                "features": {
                    "age": {"type": "numeric"},
                    "income": {"type": "numeric"},
                    "plan": {"type": "categorical"},
                    "region": {"type": "categorical"},
                },
            }
        },
    }
    cfg_path = root / "ml_platform.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg_raw))
    settings = load_settings(cfg_path)
    cfg = settings.models["bench"]
    df = bench_frame(seed=0)
    pipe = fit(df, cfg)
    smoke = [{"age": 40.0, "income": 3000.0, "plan": "pro", "region": 2}]
    meta = serving_metadata(pipe, cfg, name="bench", version=1, metrics={}, smoke_rows=smoke)
    store = ModelStore(settings.serving_dir)
    store.publish("bench", 1, export_onnx(pipe, cfg), meta)
    store.point("bench", 1)
    return cfg_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, timeout: float = 30) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("endpoint did not become ready")


def run_wrk(port: int, path: str, body: dict, conns: int, seconds: int, cpus: str | None = None) -> str:
    """wrk's output; ``cpus``: the CPU list wrk is pinned to (taskset), e.g. "0"."""
    lua = Path(tempfile.mkstemp(suffix=".lua")[1])
    lua.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    try:
        out = subprocess.run(
            [
                *(["taskset", "-c", cpus] if cpus else []),
                "wrk",
                "-t1",
                f"-c{conns}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                str(lua),
                f"http://127.0.0.1:{port}{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout
    finally:
        lua.unlink()


async def _py_client(port: int, path: str, body: dict, conns: int, seconds: float) -> str:
    payload = json.dumps(body).encode()
    req = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def one():
        nonlocal errors
        r, w = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            w.write(req)
            head = await r.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await r.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            lat.append(time.perf_counter() - t0)
        w.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(conns)))
    dt = time.perf_counter() - t0
    a = np.array(lat) * 1000
    return (
        f"  {len(lat) / dt:,.0f} req/s   p50 {np.percentile(a, 50):.3f} ms   p99 "
        f"{np.percentile(a, 99):.3f} ms   errors {errors}"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--protocol", choices=sorted(ROWS), default="mlflow")
    ap.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="serving_bench_"))
    proc = None
    try:
        cfg_path = build_store(tmp)
        port = free_port()
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
                str(args.workers),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_ready(port)
        path, body = ROWS[args.protocol]
        use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
        print(f"protocol {args.protocol}, workers {args.workers}, client {'wrk' if use_wrk else 'python'}")
        for conns in (1, 32):
            print(f"--- {conns} connection(s)")
            if use_wrk:
                print(run_wrk(port, path, body, conns, args.seconds))
            else:
                print(asyncio.run(_py_client(port, path, body, conns, args.seconds)))
    finally:
        stop_server(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
