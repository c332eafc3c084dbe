"""Batch scoring of a 1M-row file: ``ml_platform.control.scoring.score_file`` vs scikit-learn
``predict_proba`` on the same fitted pipeline (run by hand):

    .venv/bin/python benchmarks/batch_scoring.py [--rows 1000000] [--repeats 3] [--formats parquet csv]

The demo churn pipeline (HistGradientBoosting, the platform's defaults) is fitted once on
6,000 simulated rows with ``core.training.fit``, exported with ``core.export.export_onnx``
and published as the serving champion of a temporary store; the same fitted pipeline is
saved with joblib for the scikit-learn contenders. The scored file is
``simulate.generate_batch(rows)`` as Parquet and as CSV.

Every contender turns the input file into a Parquet file of predictions (id, label,
per-class probabilities, model version) and runs in its own subprocess, which reports
its wall time and peak memory (``getrusage(RUSAGE_SELF).ru_maxrss``, the whole process,
and the same minus the RSS after imports and model loading = the working memory):

- ``score_file``       ours: chunked read, vectorised typing, ONNX Runtime (1 thread) with
                       the next chunk read and typed on the other core, ParquetWriter
- ``sklearn``          pandas read of the whole file, ``frames.model_inputs``,
                       ``pipe.predict_proba`` (OpenMP on every core), ``to_parquet``
- ``sklearn_chunked``  the same per 50,000-row chunk (bounded memory)
- ``onnx_predict``     pandas read of the whole file + ``core.export.onnx_predict`` (what
                       the ``batch_predictions`` asset does today)

Times are the median of ``--repeats`` runs; the 1-minute load average is printed next
to every figure (the machine has 2 cores and is shared with other jobs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

MODEL = "churn"
CHUNK = 50_000
CONTENDERS = ["score_file", "sklearn", "sklearn_chunked", "onnx_predict"]


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so import-time spikes do not count."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------ child side
def _write(frame, out: Path) -> None:
    frame.to_parquet(out, index=False)


def _frame(df, cfg, proba, classes, version):
    import numpy as np
    import pandas as pd

    out = pd.DataFrame({cfg.id_column: df[cfg.id_column].to_numpy()})
    out["label"] = np.asarray(classes)[proba.argmax(axis=1)]
    for i, c in enumerate(classes):
        out[f"p_{c}"] = proba[:, i].astype(np.float32)
    out["model_version"] = np.int64(version)
    return out


def child(contender: str, cfg_path: Path, src: Path, out: Path) -> dict:
    import joblib
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ml_platform.control.scoring import score_file
    from ml_platform.core import export, frames
    from ml_platform.serving.store import ModelStore
    from ml_platform.settings import load_settings

    settings = load_settings(cfg_path)
    cfg = settings.models[MODEL]
    store = ModelStore(settings.serving_dir)
    version = store.current(MODEL)["version"]
    pipe = joblib.load(cfg_path.parent / "pipeline.joblib") if contender.startswith("sklearn") else None
    onnx_bytes = store.read(MODEL, version)[0] if contender == "onnx_predict" else None
    fmt = "csv" if src.suffix == ".csv" else "parquet"
    read = (lambda p: pd.read_csv(p)) if fmt == "csv" else pd.read_parquet  # noqa: E731
    import gc

    gc.collect()
    hwm_imports = _status_mb("VmHWM")
    reset = _reset_peak()
    base = _status_mb("VmRSS")
    t0 = time.perf_counter()
    if contender == "score_file":
        rows = score_file(settings, MODEL, src, out)["rows"]
    elif contender == "sklearn":
        df = read(src)
        proba = pipe.predict_proba(frames.model_inputs(df, cfg))
        _write(_frame(df, cfg, proba, pipe.classes_, version), out)
        rows = len(df)
    elif contender == "sklearn_chunked":
        chunks = (
            pd.read_csv(src, chunksize=CHUNK)
            if fmt == "csv"
            else (b.to_pandas() for b in pq.ParquetFile(src).iter_batches(batch_size=CHUNK))
        )
        writer, rows = None, 0
        for df in chunks:
            proba = pipe.predict_proba(frames.model_inputs(df, cfg))
            table = pa.Table.from_pandas(_frame(df, cfg, proba, pipe.classes_, version), preserve_index=False)
            writer = writer or pq.ParquetWriter(out, table.schema)
            writer.write_table(table)
            rows += len(df)
        writer.close()
    elif contender == "onnx_predict":
        df = read(src)
        proba = export.onnx_predict(export.session(onnx_bytes), df, cfg)
        _write(_frame(df, cfg, proba, [0, 1], version), out)
        rows = len(df)
    else:
        raise ValueError(contender)
    seconds = time.perf_counter() - t0
    peak = _status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "rows": rows,
        "seconds": seconds,
        "peak_rss_mb": peak,
        "base_rss_mb": base,
        "import_peak_mb": hwm_imports,
        "peak_reset": reset,
    }


# ------------------------------------------------------------------ parent side
def setup(root: Path, rows: int, formats: list[str]) -> tuple[Path, dict[str, Path]]:
    import joblib

    from ml_platform.core import export, training
    from ml_platform.core.simulate import generate_batch
    from ml_platform.serving.store import ModelStore
    from ml_platform.settings import load_settings
    from ml_platform_tests.conftest import write_config

    cfg_path = write_config(root)
    settings = load_settings(cfg_path)
    cfg = settings.models[MODEL]
    pipe = training.fit(generate_batch(6000, seed=1), cfg)
    meta = export.serving_metadata(pipe, cfg, name=MODEL, version=1, metrics={}, smoke_rows=[])
    store = ModelStore(settings.serving_dir)
    store.publish(MODEL, 1, export.export_onnx(pipe, cfg), meta)
    store.point(MODEL, 1)
    joblib.dump(pipe, root / "pipeline.joblib")
    df = generate_batch(rows, seed=5)
    files = {}
    for fmt in formats:
        p = root / f"batch.{fmt}"
        df.to_csv(p, index=False) if fmt == "csv" else df.to_parquet(p, index=False)
        files[fmt] = p
    return cfg_path, files


def run_child(contender: str, cfg_path: Path, src: Path, out: Path) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            contender,
            "--config",
            str(cfg_path),
            "--input",
            str(src),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{contender} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_same(outs: dict[str, Path]) -> str:
    """All contenders wrote the same ids and labels, probabilities within float32 noise."""
    import numpy as np
    import pandas as pd

    ref = pd.read_parquet(outs["score_file"])
    notes = []
    for name, p in outs.items():
        o = pd.read_parquet(p)
        assert (o["customer_id"].to_numpy() == ref["customer_id"].to_numpy()).all(), name
        d = float(np.abs(o["p_1"].to_numpy(np.float64) - ref["p_1"].to_numpy(np.float64)).max())
        lab = float((o["label"].to_numpy() != ref["label"].to_numpy()).mean())
        notes.append(f"{name}: max |Δp| {d:.1e}, labels differing {lab:.4%}")
    return "; ".join(notes)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--formats", nargs="+", default=["parquet", "csv"], choices=["parquet", "csv"])
    ap.add_argument("--contenders", nargs="+", default=CONTENDERS, choices=CONTENDERS)
    ap.add_argument("--child")
    ap.add_argument("--config")
    ap.add_argument("--input")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.config), Path(args.input), Path(args.out))))
        return 0

    root = Path(tempfile.mkdtemp(prefix="batch_scoring_"))
    try:
        t = time.perf_counter()
        cfg_path, files = setup(root, args.rows, args.formats)
        print(
            f"setup (fit, export, {args.rows:,} rows as {', '.join(args.formats)}): "
            f"{time.perf_counter() - t:.1f} s; load {os.getloadavg()[0]:.2f}"
        )
        lines = [
            "| input | contender | rows/s (median) | seconds | vs sklearn | peak RSS | "
            "working memory (peak − RSS after imports) | load avg (range) |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for fmt, src in files.items():
            res, outs = {}, {}
            for rep in range(args.repeats):  # interleaved, so load changes hit everyone alike
                for c in args.contenders:
                    out = root / f"out-{c}-{fmt}.parquet"
                    la = os.getloadavg()[0]
                    r = run_child(c, cfg_path, src, out)
                    r["load"], r["load_after"] = la, os.getloadavg()[0]
                    res.setdefault(c, []).append(r)
                    outs[c] = out
                    print(
                        f"  {fmt:7s} {c:16s} run {rep + 1}: {r['rows'] / r['seconds']:>10,.0f} rows/s  "
                        f"{r['seconds']:.2f} s  peak RSS {r['peak_rss_mb']:.0f} MB "
                        f"(+{r['peak_rss_mb'] - r['base_rss_mb']:.0f})  load {la:.2f}",
                        flush=True,
                    )
            print("  " + check_same(outs))
            med = {c: statistics.median(r["seconds"] for r in rs) for c, rs in res.items()}
            for c, rs in res.items():
                rows = rs[0]["rows"]
                peak = max(r["peak_rss_mb"] for r in rs)
                work = max(r["peak_rss_mb"] - r["base_rss_mb"] for r in rs)
                vs = f"{med['sklearn'] / med[c]:.2f}×" if "sklearn" in med else "–"
                loads = [r[k] for r in rs for k in ("load", "load_after")]
                la = f"{min(loads):.2f}–{max(loads):.2f}"
                lines.append(
                    f"| {fmt} | {c} | {rows / med[c]:,.0f} | {med[c]:.2f} | {vs} | {peak:.0f} MB | "
                    f"{work:.0f} MB | {la} |"
                )
        print()
        print("\n".join(lines))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
