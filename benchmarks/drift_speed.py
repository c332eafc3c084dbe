"""Drift-check speed: ml_platform.core.drift vs a scipy KS/chi2 loop vs Evidently.

    .venv/bin/python benchmarks/drift_speed.py                  # 100k and 1M batches
    .venv/bin/python benchmarks/drift_speed.py --sizes 100000   # quicker

Same synthetic data for every contender (15 numeric + 5 categorical object-string
columns; reference ``--ref-rows`` rows, batch mildly drifted in 3 numeric + 1 categorical
column). Each (contender, size) runs in its own subprocess so memory is isolated:

* time: median of ``--repeats`` timed runs after one small warm-up (imports, lazy init);
  ours excludes ``build_reference`` (done once per champion), reported separately;
* memory: peak traced allocation of one extra run under ``tracemalloc`` (numpy and
  pandas buffers are traced), i.e. the working memory of the check itself, plus the
  subprocess's max RSS (data + libraries + check).

Evidently runs with the interpreter in --evidently-python, else the main venv if it
imports, else /work/main/.venv-bench (see benchmarks/README.md); otherwise it is reported
as not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_NUM, N_CAT = 15, 5


# ------------------------------------------------------------------------------ data


def make_data(rows: int, seed: int, drift: bool):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    cols = {}
    for i in range(N_NUM):
        shift = 0.5 if drift and i in (0, 5, 10) else 0.0
        kind = i % 5
        if kind == 0:
            x = rng.normal(50.0, 10.0, rows) + 10.0 * shift
        elif kind == 1:
            x = rng.lognormal(1.0 + 0.5 * shift, 0.7, rows)
        elif kind == 2:
            x = rng.exponential(2.0, rows) + 2.0 * shift
        elif kind == 3:
            x = rng.poisson(3.0, rows).astype(np.float64)
        else:
            x = rng.uniform(0.0, 1.0, rows)
        cols[f"num_{i:02d}"] = x
    for j in range(N_CAT):
        k = 4 + 4 * j
        p = np.random.default_rng(100 + j).dirichlet(np.full(k, 2.0))
        if drift and j == 0:
            p = 0.6 * p + 0.4 * np.eye(k)[-1]
        labels = np.array([f"c{j}_{v}" for v in range(k)], dtype=object)
        cols[f"cat_{j}"] = labels[rng.choice(k, rows, p=p)]
    return pd.DataFrame(cols)


def columns():
    return [f"num_{i:02d}" for i in range(N_NUM)], [f"cat_{j}" for j in range(N_CAT)]


# ------------------------------------------------------------------------ contenders


def run_ours(ref, cur, repeats):
    sys.path.insert(0, str(ROOT))
    from ml_platform.core.drift import compute_drift
    from ml_platform.core.drift_reference import build_reference

    num, cat = columns()
    features = {c: {"type": "numeric"} for c in num} | {c: {"type": "categorical"} for c in cat}
    t0 = time.perf_counter()
    reference = build_reference(ref, features)
    build_s = time.perf_counter() - t0
    compute_drift(reference, cur.head(2000))  # warm-up

    def once():
        return len(compute_drift(reference, cur).drifted_features)

    return once, {"build_s": build_s}


def run_scipy(ref, cur, repeats):
    import numpy as np
    from scipy import stats

    num, cat = columns()

    def once():
        drifted = 0
        for c in num:
            drifted += stats.ks_2samp(ref[c].to_numpy(), cur[c].to_numpy()).pvalue < 0.05
        for c in cat:
            r, b = ref[c].value_counts(), cur[c].value_counts()
            idx = r.index.union(b.index)
            table = np.vstack([r.reindex(idx, fill_value=0).to_numpy(), b.reindex(idx, fill_value=0).to_numpy()])
            drifted += stats.chi2_contingency(table)[1] < 0.05
        return drifted

    return once, {}


def run_evidently(ref, cur, repeats):
    import warnings

    warnings.filterwarnings("ignore")
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    num, cat = columns()
    dd = DataDefinition(numerical_columns=num, categorical_columns=cat)

    def run(a, b):
        return Report([DataDriftPreset()]).run(
            Dataset.from_pandas(b, data_definition=dd), Dataset.from_pandas(a, data_definition=dd)
        )

    run(ref.head(2000), cur.head(2000))  # warm-up

    def once():
        snap = run(ref, cur).dict()
        counts = [
            m["value"]["count"] for m in snap["metrics"] if m.get("metric_name", "").startswith("DriftedColumnsCount")
        ]
        return int(counts[0]) if counts else -1

    return once, {}


CONTENDERS = {"ours": run_ours, "scipy": run_scipy, "evidently": run_evidently}


def worker(contender: str, rows: int, ref_rows: int, repeats: int) -> dict:
    import resource

    ref = make_data(ref_rows, seed=1, drift=False)
    cur = make_data(rows, seed=2, drift=True)
    import tracemalloc

    once, extra = CONTENDERS[contender](ref, cur, repeats)
    times, drifted = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        drifted = once()
        times.append(time.perf_counter() - t0)
    # one more, untimed run under tracemalloc (numpy/pandas buffers are traced too)
    tracemalloc.start()
    once()
    alloc_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "contender": contender,
        "rows": rows,
        "ref_rows": ref_rows,
        "median_s": statistics.median(times),
        "times": times,
        "alloc_peak_mb": alloc_peak / 2**20,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "drifted": int(drifted),
        **extra,
    }


# ------------------------------------------------------------------------------ main


def evidently_python(explicit: str | None) -> tuple[str | None, str]:
    candidates = [explicit] if explicit else [sys.executable, str(ROOT / ".venv-bench/bin/python")]
    for py in candidates:
        if py and Path(py).exists():
            r = subprocess.run(
                [py, "-c", "import evidently; print(evidently.__version__)"], capture_output=True, text=True
            )
            if r.returncode == 0:
                return py, r.stdout.strip()
    return None, "not installed (pip install evidently; see benchmarks/README.md)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--ref-rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--contenders", nargs="+", default=list(CONTENDERS))
    ap.add_argument("--evidently-python", default=None)
    ap.add_argument("--worker", nargs=4, metavar=("CONTENDER", "ROWS", "REF_ROWS", "REPEATS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        c, rows, ref_rows, reps = args.worker
        print("RESULT " + json.dumps(worker(c, int(rows), int(ref_rows), int(reps))))
        return

    ev_py, ev_version = evidently_python(args.evidently_python)
    env = dict(os.environ, DO_NOT_TRACK="1", EVIDENTLY_DISABLE_TELEMETRY="1", PYTHONWARNINGS="ignore")
    results, notes = [], []
    for rows in args.sizes:
        for c in args.contenders:
            py = sys.executable
            if c == "evidently":
                if ev_py is None:
                    notes.append(f"evidently: {ev_version}")
                    continue
                py = ev_py
            cmd = [py, str(Path(__file__).resolve()), "--worker", c, str(rows), str(args.ref_rows), str(args.repeats)]
            print(f"# running {c} on {rows:,} rows ...", file=sys.stderr, flush=True)
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if r.returncode != 0 or line is None:
                notes.append(f"{c} @ {rows}: failed: {r.stderr.strip().splitlines()[-1:]}")
                continue
            results.append(json.loads(line[7:]))

    import platform

    print(
        f"\nDrift check, {N_NUM} numeric + {N_CAT} categorical columns, reference "
        f"{args.ref_rows:,} rows, median of {args.repeats} "
        f"(Python {platform.python_version()}, {os.cpu_count()} CPUs"
        f"{', evidently ' + ev_version if ev_py else ''}).\n"
    )
    print(
        "| batch rows | contender | time (median) | speed-up vs scipy loop | build reference "
        "| peak alloc (tracemalloc) | process max RSS | drifted columns |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    label = {
        "ours": "ml_platform drift",
        "scipy": "scipy ks_2samp + chi2 loop",
        "evidently": "Evidently DataDriftPreset",
    }
    for rows in args.sizes:
        base = next((r["median_s"] for r in results if r["rows"] == rows and r["contender"] == "scipy"), None)
        for r in [r for r in results if r["rows"] == rows]:
            ratio = base / r["median_s"] if base else None
            speed = "–" if ratio is None else (f"{ratio:.1f}×" if ratio >= 1 else f"{ratio:.2f}×")
            build = f"{r['build_s']:.2f} s" if "build_s" in r else "–"
            delta = f"{r['alloc_peak_mb']:.0f} MB"
            print(
                f"| {rows:,} | {label[r['contender']]} | {r['median_s'] * 1000:,.0f} ms | {speed} "
                f"| {build} | {delta} | {r['max_rss_mb']:.0f} MB | {r['drifted']}/{N_NUM + N_CAT} |"
            )
    for n in notes:
        print(f"\nNote: {n}")


if __name__ == "__main__":
    main()
