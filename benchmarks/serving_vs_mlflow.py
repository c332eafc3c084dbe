"""Our endpoint vs ``mlflow models serve`` vs a bare Starlette echo, same model, same request,
same load generator, in one run (run by hand):

    .venv/bin/python benchmarks/serving_vs_mlflow.py [--seconds 10] [--workers 1 2] [--connections 1 32]

1. Builds a real champion of the demo churn model in a temp dir, the way a user does:
   a config from ``ml_platform_tests.conftest.write_config`` (retrain on every arrival),
   three ``simulate.write_batches`` files, ``python -m ml_platform --config CFG run``
   (registers ``churn`` in MLflow with alias ``champion`` and publishes its ONNX graph
   to the serving store; each batch gives a version, so there are earlier versions too).
2. For each server, 1 and 2 uvicorn workers, wrk (1 thread, a Lua script for the POST
   body) at 1 and 32 connections for ``--seconds``:
   - ours:   ``python -m ml_platform --config CFG serve --workers W`` (ONNX Runtime)
   - mlflow: ``mlflow models serve -m models:/churn@champion --env-manager local -w W``
             with ``MLFLOW_TRACKING_URI`` = the platform's tracking URI
   - echo:   a Starlette route returning the request body, under uvicorn with the same
             loop/http settings as ours (the floor any Python endpoint pays)
   All get ``POST /invocations`` with one ``dataframe_records`` row, categoricals as
   strings (as the MLflow signature expects). Before measuring, both model servers must
   answer that row with the same probability (float32 vs float64 aside).
3. MLflow issue #4039: with both servers up, ``ml-platform rollback --to-version N`` moves
   the alias; ``mlflow models serve`` resolved ``models:/churn@champion`` once at start
   and keeps answering with the old version, ours switches (X-Model-Version and the
   probability). A restarted ``mlflow models serve`` then serves N.

Every figure is printed with the 1-minute load average taken just before it: wrk, the
server and any other job share the machine's cores.

``--src DIR`` runs "ours" from another checkout (its ``ml_platform`` first on
``PYTHONPATH``, e.g. a ``git worktree`` of an older commit); the world is always built
with this one. With ``--ab-rounds N`` it is an interleaved A/B instead: this checkout and
``--src`` (one worker each, same world, same body), measured in turn N times at each
``--connections``, then the medians. Big requests against single rows: see
``serving_big_requests.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from serving_bench import free_port, run_wrk  # noqa: E402  (shared with the endpoint benchmark)

PY = sys.executable
BIN = Path(PY).parent
MODEL = "churn"
PATH = "/invocations"


# ---------------------------------------------------------------- the echo server
def echo_app():
    """uvicorn factory: a bare Starlette echo (POST returns the body) + a health route."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/json")

    async def health(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(routes=[Route(PATH, echo, methods=["POST"]), Route("/health", health)])


def serve_echo(port: int, workers: int) -> None:
    import uvicorn

    have = lambda mod: importlib.util.find_spec(mod) is not None  # noqa: E731 - as serving/server.py
    uvicorn.run(
        "serving_vs_mlflow:echo_app",
        factory=True,
        app_dir=str(HERE),
        host="127.0.0.1",
        port=port,
        workers=workers,
        loop="uvloop" if have("uvloop") else "asyncio",
        http="httptools" if have("httptools") else "h11",
        access_log=False,
        log_level="warning",
        lifespan="on",
    )


# ---------------------------------------------------------------- helpers
def loadavg() -> float:
    return os.getloadavg()[0]


def cli(cfg: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "ml_platform", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cfg.parent,
    )


class Server:
    """A server process in its own session, stopped by its process group only."""

    def __init__(self, name: str, cmd: list[str], port: int, health: str, log: Path, env: dict | None = None):
        self.name, self.port, self.health = name, port, health
        self.log = log
        with open(log, "ab") as f:
            self.proc = subprocess.Popen(
                cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=log.parent
            )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout: float = 90) -> None:
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n" + self.log.read_text()[-3000:])
            try:
                if httpx.get(self.url(self.health), timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n" + self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass
        # the group may outlive its leader for a moment (uvicorn workers)
        for _ in range(50):
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text.strip())
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_wrk(out: str) -> dict:
    """req/s, p50, p99 (ms) and errors (non-2xx + socket errors) from ``wrk --latency``."""
    res = {
        "rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),
        "p50": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
        "p99": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
    }
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["errors"] = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return res


# ---------------------------------------------------------------- the model
def build_world(root: Path) -> tuple[Path, dict]:
    from ml_platform.core.simulate import write_batches
    from ml_platform.settings import load_settings
    from ml_platform_tests.conftest import write_config

    cfg = write_config(root, port=free_port(), ui_port=free_port(), extra="retrain: {policy: on_arrival}\n")
    write_batches(load_settings(cfg).landing_dir(MODEL), 3, rows=2000, seed=0)
    t = time.perf_counter()
    run = cli(cfg, "run")
    (root / "run.log").write_text(run.stdout + run.stderr)
    if run.returncode != 0:
        raise RuntimeError(f"ml-platform run failed ({run.returncode}), see {root / 'run.log'}:\n" + run.stderr[-3000:])
    print(f"ml-platform run: {time.perf_counter() - t:.1f} s")
    st = cli(cfg, "status", "--json")
    status = json.loads(st.stdout)
    return cfg, status


def body_row() -> dict:
    from ml_platform_tests.e2e.helpers import ROW

    numeric = {"tenure_months", "monthly_charges", "support_calls", "usage_gb", "age"}
    return {k: (float(v) if k in numeric else str(v)) for k, v in ROW.items() if k != "customer_id"}


def version_probabilities(cfg: Path, row: dict) -> dict[int, float]:
    """P(churn) of the row for every published version (ONNX in the serving store)."""
    import pandas as pd

    from ml_platform.core.export import onnx_predict, session
    from ml_platform.serving.store import ModelStore
    from ml_platform.settings import load_settings

    settings = load_settings(cfg)
    store = ModelStore(settings.serving_dir)
    out = {}
    for v in store.versions(MODEL):
        onnx_bytes, _ = store.read(MODEL, v)
        out[v] = float(onnx_predict(session(onnx_bytes), pd.DataFrame([row]), settings.models[MODEL])[0, 1])
    return out


def ask(server: Server, body: dict) -> tuple[float, str | None]:
    """(P(churn), X-Model-Version) of one request; both response shapes understood."""
    import httpx

    r = httpx.post(server.url(PATH), json=body, timeout=10)
    r.raise_for_status()
    pred = r.json()["predictions"][0]
    p1 = pred["probabilities"]["1"] if isinstance(pred, dict) else pred[1]
    return float(p1), r.headers.get("x-model-version")


def which(p1: float, probs: dict[int, float]) -> str:
    v, p = min(probs.items(), key=lambda kv: abs(kv[1] - p1))
    return f"v{v}" if abs(p - p1) < 1e-5 else "?"


# ---------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--servers", nargs="+", default=["ours", "mlflow", "echo"], choices=["ours", "mlflow", "echo"])
    ap.add_argument("--skip-swap-demo", action="store_true")
    ap.add_argument(
        "--contention",
        action="store_true",
        help="run a busy-loop process during every cell (another job holding a core)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (its path is printed)")
    ap.add_argument("--src", help="run our endpoint from this checkout (before/after comparisons)")
    ap.add_argument(
        "--ab-rounds", type=int, default=0, help="with --src: interleaved A/B, this checkout vs --src, N rounds"
    )
    ap.add_argument("--echo-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--echo-workers", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.echo_server:
        serve_echo(args.echo_server, args.echo_workers)
        return 0
    if not shutil.which("wrk"):
        print("wrk is required: apt-get install -y wrk", file=sys.stderr)
        return 2

    root = Path(tempfile.mkdtemp(prefix="serving_vs_mlflow_"))
    print(f"work dir {root}  (load average {loadavg():.2f})")
    servers: list[Server] = []
    try:
        cfg, status = build_world(root)
        tracking = status["tracking_uri"]
        champ = status["models"][MODEL]["champion"]["version"]
        passed = [v["version"] for v in status["models"][MODEL]["versions"] if v["gate_passed"]]
        print(f"tracking URI {tracking}; champion v{champ}; gate-passed versions {passed}")
        ours_port = int(re.search(r"port: (\d+)", cfg.read_text()).group(1))
        env_mlflow = {
            **os.environ,
            "MLFLOW_TRACKING_URI": tracking,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        row = body_row()
        body = {"dataframe_records": [row]}
        probs = version_probabilities(cfg, row)
        print(f"request body: {json.dumps(body)}")

        env_ours = None
        if args.src:
            src = str(Path(args.src).resolve())
            env_ours = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
            print(f"ours runs from {src}")

        def start(kind: str, workers: int) -> Server:
            if kind == "ours":
                s = Server(
                    f"ours/{workers}w",
                    [PY, "-m", "ml_platform", "--config", str(cfg), "serve", "--workers", str(workers)],
                    ours_port,
                    "/v2/health/ready",
                    root / "ours.log",
                    env=env_ours,
                )
            elif kind == "mlflow":
                port = free_port()
                s = Server(
                    f"mlflow/{workers}w",
                    [
                        str(BIN / "mlflow"),
                        "models",
                        "serve",
                        "-m",
                        f"models:/{MODEL}@champion",
                        "--env-manager",
                        "local",
                        "-p",
                        str(port),
                        "-h",
                        "127.0.0.1",
                        "-w",
                        str(workers),
                    ],
                    port,
                    "/ping",
                    root / "mlflow.log",
                    env=env_mlflow,
                )
            else:
                port = free_port()
                s = Server(
                    f"echo/{workers}w",
                    [PY, str(Path(__file__).resolve()), "--echo-server", str(port), "--echo-workers", str(workers)],
                    port,
                    "/health",
                    root / "echo.log",
                )
            servers.append(s)
            s.wait_ready()
            return s

        if args.src and args.ab_rounds:
            ab(args, cfg, ours_port, body, env_ours, root)
            return 0
        results = []
        for kind in args.servers:
            for w in args.workers:
                s = start(kind, w)
                try:
                    if kind != "echo":
                        p1, ver = ask(s, body)
                        print(
                            f"{s.name}: P(churn) {p1:.7f} = {which(p1, probs)}"
                            + (f", X-Model-Version {ver}" if ver else "")
                        )
                        if which(p1, probs) != f"v{champ}":
                            raise RuntimeError(f"{s.name} does not answer like champion v{champ}: {p1}")
                    run_wrk(s.port, PATH, body, 8, 2)  # warm-up
                    for c in args.connections:
                        la = loadavg()
                        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.contention else None
                        try:
                            r = parse_wrk(run_wrk(s.port, PATH, body, c, args.seconds))
                        finally:
                            if hog is not None:  # our own child, by PID
                                hog.kill()
                                hog.wait()
                        r.update(server=kind, workers=w, conns=c, load=la, load_after=loadavg())
                        results.append(r)
                        print(
                            f"  {s.name:10s} c={c:<3d} {r['rps']:>9,.0f} req/s  p50 {r['p50']:.3f} ms  "
                            f"p99 {r['p99']:.3f} ms  errors {r['errors']}  (load {la:.2f}->{r['load_after']:.2f})",
                            flush=True,
                        )
                finally:
                    s.stop()
                    servers.remove(s)

        print()
        print(table(results))
        if args.skip_swap_demo:
            return 0
        print()
        swap_demo(cfg, start, body, probs, champ, passed, env_mlflow)
    finally:
        for s in servers:
            s.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def ab(args, cfg: Path, port: int, body: dict, env_src: dict, root: Path) -> None:
    """This checkout ("after") vs ``--src`` ("before"), one worker, in turn, ``--ab-rounds``
    times; the CPU time of the server per request comes from /proc (kernel TCP work included)."""
    import statistics

    def cpu(pid: int) -> float:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError):
            return float("nan")

    rows: dict[tuple, list] = {}
    for rnd in range(args.ab_rounds):
        for label, env in (("after", None), ("before", env_src)):
            s = Server(
                f"{label}",
                [PY, "-m", "ml_platform", "--config", str(cfg), "serve", "--workers", "1"],
                port,
                "/v2/health/ready",
                root / f"{label}.log",
                env=env,
            )
            try:
                s.wait_ready()
                run_wrk(s.port, PATH, body, 8, 2)  # warm-up
                for c in args.connections:
                    la, c0 = loadavg(), cpu(s.proc.pid)
                    r = parse_wrk(run_wrk(s.port, PATH, body, c, args.seconds))
                    r["cpu_us"] = (cpu(s.proc.pid) - c0) / max(r["requests"], 1) * 1e6
                    r["load"] = la
                    rows.setdefault((label, c), []).append(r)
                    print(
                        f"  round {rnd + 1} {label:6s} c={c:<3d} {r['rps']:>9,.0f} req/s  p50 {r['p50']:.3f} ms  "
                        f"p99 {r['p99']:.3f} ms  server CPU {r['cpu_us']:.0f} µs/req  errors {r['errors']}  "
                        f"(load {la:.2f})",
                        flush=True,
                    )
            finally:
                s.stop()
    print()
    print("| build | connections | req/s (median) | p50 ms | p99 ms | server CPU µs/req | req/s per round | load avg |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for (label, c), rs in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0] != "before")):
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        print(
            f"| {label} | {c} | {med('rps'):,.0f} | {med('p50'):.3f} | {med('p99'):.2f} | {med('cpu_us'):.0f} | "
            + " / ".join(f"{r['rps']:,.0f}" for r in rs)
            + f" | {min(r['load'] for r in rs):.2f}–{max(r['load'] for r in rs):.2f} |"
        )


def table(results: list[dict]) -> str:
    by = {(r["server"], r["workers"], r["conns"]): r for r in results}
    lines = [
        "| server | workers | connections | req/s | p50 ms | p99 ms | errors | load avg before→after | "
        "ours / mlflow (req/s) | ours / echo (req/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"ours": "ml_platform (ONNX Runtime)", "mlflow": "mlflow models serve", "echo": "Starlette echo (no model)"}
    for r in results:
        ratios = ["", ""]
        if r["server"] == "ours":
            for i, other in enumerate(("mlflow", "echo")):
                o = by.get((other, r["workers"], r["conns"]))
                ratios[i] = f"{r['rps'] / o['rps']:.{1 if other == 'mlflow' else 2}f}×" if o and o["rps"] else "–"
        lines.append(
            f"| {names[r['server']]} | {r['workers']} | {r['conns']} | {r['rps']:,.0f} | "
            f"{r['p50']:.3f} | {r['p99']:.3f} | {r['errors']} | {r['load']:.2f}→{r['load_after']:.2f} | "
            f"{ratios[0]} | {ratios[1]} |"
        )
    return "\n".join(lines)


def swap_demo(cfg: Path, start, body: dict, probs: dict, champ: int, passed: list[int], env_mlflow) -> None:
    """MLflow #4039: the alias moves, `mlflow models serve` keeps the version it loaded."""
    from mlflow import MlflowClient

    targets = [v for v in passed if v != champ]
    if not targets:
        print(f"swap demo skipped: no other gate-passed version than v{champ}")
        return
    target = targets[-1]
    client = MlflowClient(
        tracking_uri=env_mlflow["MLFLOW_TRACKING_URI"], registry_uri=env_mlflow["MLFLOW_TRACKING_URI"]
    )
    alias = lambda: client.get_model_version_by_alias(MODEL, "champion").version  # noqa: E731
    ours = start("ours", 2)
    mlf = start("mlflow", 1)
    rows = []

    def observe(when: str) -> None:
        po, vo = ask(ours, body)
        pm, _ = ask(mlf, body)
        rows.append(
            f"| {when} | v{alias()} | {which(po, probs)} (X-Model-Version {vo}, P {po:.6f}) | "
            f"{which(pm, probs)} (P {pm:.6f}) |"
        )

    try:
        # The same row with the integer-coded categorical sent as a JSON number: ours treats
        # 3 and "3" as one category (as in training); MLflow's pyfunc does not convert it.
        as_int = {"dataframe_records": [{**body["dataframe_records"][0], "region": 3}]}
        (po, _), (pm, _) = ask(ours, as_int), ask(mlf, as_int)
        print(
            f'region sent as 3 instead of "3": ml_platform P {po:.6f} ({which(po, probs)}), '
            f"mlflow P {pm:.6f} ({which(pm, probs)})"
        )
        observe("before")
        t = time.perf_counter()
        rb = cli(cfg, "rollback", "--model", MODEL, "--to-version", str(target))
        print(
            f"$ ml-platform rollback --model {MODEL} --to-version {target}  ->  "
            f"{(rb.stdout or rb.stderr).strip()}  ({time.perf_counter() - t:.1f} s)"
        )
        observe("right after the rollback")
        time.sleep(5)
        observe("5 s later")
        mlf.stop()
        mlf = start("mlflow", 1)
        observe("after restarting `mlflow models serve`")
    finally:
        ours.stop()
        mlf.stop()
    print("| moment | MLflow alias `champion` | ml_platform serves | mlflow models serve serves |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    print(
        "(version identified by P(churn) of the request row: "
        + ", ".join(f"v{v} {p:.6f}" for v, p in sorted(probs.items()))
        + ")"
    )


if __name__ == "__main__":
    sys.exit(main())
