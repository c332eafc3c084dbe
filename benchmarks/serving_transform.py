"""The endpoint with a feature transform beside the plain ONNX path, one server, one run:

    .venv/bin/python benchmarks/serving_transform.py [--seconds 8]

Two models from the same data (serving_bench.py's): ``plain`` takes the four input columns
straight into ONNX; ``tx`` runs ``transform_example.derive`` (pandas, per request) before the
graph, as a model with ``transform:`` does. Single-row MLflow-protocol requests through ``wrk``
at 1 and 32 connections; prints req/s, p50 and p99 for each. Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import serving_bench  # noqa: E402  (this folder's helpers)


def build(root: Path) -> Path:
    import yaml

    from ml_platform.core import transform
    from ml_platform.core.export import export_onnx, serving_metadata
    from ml_platform.core.training import fit
    from ml_platform.serving.store import ModelStore
    from ml_platform.settings import load_settings

    features = {
        "age": {"type": "numeric"},
        "income": {"type": "numeric"},
        "plan": {"type": "categorical"},
        "region": {"type": "categorical"},
    }
    model = {"landing_dir": "landing", "target": "y", "task": "classification", "id_column": "id"}
    raw = {
        "storage_dir": "state",
        "models": {
            "plain": {**model, "features": features},
            "tx": {**model, "features": features, "transform": "transform_example:derive"},
        },
    }
    cfg_path = root / "ml_platform.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    (root / "landing").mkdir()
    settings = load_settings(cfg_path)
    df = serving_bench.bench_frame(seed=0)
    smoke = [{"age": 40.0, "income": 3000.0, "plan": "pro", "region": 2}]
    store = ModelStore(settings.serving_dir)
    for name, cfg in settings.models.items():
        frame, mcfg = df, cfg
        if cfg.transform:
            spec = transform.version_meta(cfg)
            fn = transform.load_from_source(spec["source"], cfg.transform, spec["package"], spec["file"])
            frame = transform.apply(fn, df, cfg.transform)
            mcfg = transform.model_config(cfg, transform.derived_features(frame, cfg))
        pipe = fit(frame, mcfg)
        meta = serving_metadata(pipe, mcfg, name=name, version=1, metrics={}, smoke_rows=smoke)
        if cfg.transform:
            meta = transform.raw_metadata(meta, cfg, transform.version_meta(cfg), df)
        store.publish(name, 1, export_onnx(pipe, mcfg), meta)
        store.point(name, 1)
    return cfg_path


def figures(wrk_out: str) -> tuple[float, float, float]:
    """(req/s, p50 ms, p99 ms) from wrk --latency output."""

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)", wrk_out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk_out).group(1))
    return rps, ms("50"), ms("99")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cfg = build(Path(d))
        port = serving_bench.free_port()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "ml_platform.serving", "--config", str(cfg), "--port", str(port)],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            serving_bench.wait_ready(port, timeout=60)
            body = {"dataframe_records": [{"id": 17, "age": 42.0, "income": 5100.5, "plan": "gold", "region": 3}]}
            print("| model | connections | req/s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|")
            for conns in (1, 32):
                for name in ("plain", "tx"):
                    out = serving_bench.run_wrk(port, f"/models/{name}/invocations", body, conns, args.seconds)
                    rps, p50, p99 = figures(out)
                    label = "ONNX only" if name == "plain" else "transform + ONNX"
                    print(f"| {label} | {conns} | {rps:,.0f} | {p50:.2f} | {p99:.2f} |", flush=True)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
