"""Closed-loop benchmark: does the default retrain policy stay quiet on stable data and
heal the model after real drift, at realistic batch sizes?

One fresh world (temp dir: config, landing zone, persistent Dagster instance, MLflow
SQLite store). Files are landed one at a time and taken through the whole graph with
`run_pending` (what `ml-platform run` does; same jobs, same policy as the sensors):

  1. a first labelled batch  -> the first champion;
  2. N stable batches of several sizes (default 1k, 10k, 50k, 100k rows, cycled) -> any
     retrain decided here is a false alarm;
  3. M drifted batches (``generate_batch(..., drift=1.0)``: features and the label
     relationship move) -> the loop must decide a retrain, and the new champion must win
     back the lost metric.

Per batch it prints rows, drift verdict + share of drifted features, the champion's
metric on the batch with its bootstrap CI, the decision, and the champion's metric on
fresh data (stable and drifted, scored with the serving ONNX file). Totals: false
alarms, drifted batches until a new champion served, served metric before / after.

    .venv/bin/python benchmarks/closed_loop.py                       # 24 stable, 4 drifted, up to 100k rows
    .venv/bin/python benchmarks/closed_loop.py --sizes 200 500 1000 --stable 20 --drifted 3   # quick
    .venv/bin/python benchmarks/closed_loop.py --markdown            # README table
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from sklearn.metrics import roc_auc_score

from ml_platform.core import catalog, export
from ml_platform.core.simulate import generate_batch
from ml_platform.serving.store import ModelStore
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import write_config


def served_auc(settings, name: str, df) -> tuple[int | None, float | None]:
    """(version, ROC AUC) of the model the serving store points at, on ``df``."""
    store = ModelStore(settings.serving_dir)
    pointer = store.current(name)
    if not pointer:
        return None, None
    onnx_bytes, meta = store.read(name, pointer["version"])
    cfg = settings.models[name]
    proba = export.onnx_predict(export.session(onnx_bytes), df, cfg)
    y = df[cfg.target].astype(str).to_numpy() == str(meta["classes"][1])  # binary: classes[1] is positive
    return pointer["version"], float(roc_auc_score(y, proba[:, 1]))


@contextlib.contextmanager
def quiet(log: Path):
    """Send the pipeline's own output (Dagster event logs, MLflow notices) to ``log``, at the
    file-descriptor level so loggers that captured sys.stderr earlier are silenced too."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "ab") as f:
        os.dup2(f.fileno(), 1), os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def land(landing: Path, name: str, df, mtime: float) -> Path:
    """Atomic landing (tmp name, then rename), with an explicit arrival time."""
    final = landing / name
    tmp = landing / f".{name}.tmp"
    df.to_parquet(tmp, index=False) if name.endswith(".parquet") else df.to_csv(tmp, index=False)
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, final)
    return final


def fmt_drift(d: dict) -> str:
    if not d:
        return "-"
    if d.get("verdict") in ("stable", "drifted"):
        return f"{d['verdict']} {d.get('share_drifted', 0):.0%}"
    return d.get("verdict", "-")


def fmt_perf(p: dict) -> str:
    if not p:
        return "-"
    if p.get("skipped"):
        return f"skipped ({p['skipped']})"
    flag = " DROP" if p.get("significant") else ""
    base = f"{p['baseline']:.3f}"
    if p.get("baseline_ci"):  # the holdout's own bootstrap interval
        base += f" [{p['baseline_ci'][0]:.3f}, {p['baseline_ci'][1]:.3f}]"
    return f"{p['value']:.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}] vs {base}{flag}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sizes", type=int, nargs="+", default=[1_000, 10_000, 50_000, 100_000], help="stable batch sizes, cycled"
    )
    ap.add_argument("--stable", type=int, default=24, help="stable batches after the first champion")
    ap.add_argument("--drifted", type=int, default=4, help="drifted batches at the end")
    ap.add_argument("--drifted-rows", type=int, default=10_000)
    ap.add_argument("--first-rows", type=int, default=10_000, help="rows of the batch the first champion learns")
    ap.add_argument("--drift", type=float, default=1.0)
    ap.add_argument("--eval-rows", type=int, default=50_000, help="fresh rows for the served metric")
    ap.add_argument(
        "--extra-config", default="", help="YAML lines under models.churn (e.g. 'retrain: {debounce_batches: 1}')"
    )
    ap.add_argument("--workdir", help="keep the world here (default: a temp dir, removed)")
    ap.add_argument("--markdown", action="store_true", help="print the per-batch table as markdown")
    ap.add_argument("--json", help="write per-batch rows and totals to this file")
    args = ap.parse_args(argv)

    ctx = contextlib.nullcontext(args.workdir) if args.workdir else tempfile.TemporaryDirectory(prefix="closed_loop-")
    with ctx as root:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        write_config(root, extra=args.extra_config.replace("\\n", "\n") + ("\n" if args.extra_config else ""))
        settings = load_settings(root / "ml_platform.yaml")
        from ml_platform.runtime.instance import (
            get_instance,  # persistent instance under storage_dir, like `ml-platform run`
        )

        instance = get_instance(settings)
        from ml_platform.control.runner import run_pending
        from ml_platform.defs.definitions import build_definitions

        defs = build_definitions(settings)
        landing = settings.landing_dir("churn")
        fresh_stable = generate_batch(args.eval_rows, seed=900_001, start_id=10**9)
        fresh_drift = generate_batch(args.eval_rows, seed=900_002, drift=args.drift, start_id=2 * 10**9)

        plan = [("first", args.first_rows, 0.0)]
        plan += [("stable", args.sizes[i % len(args.sizes)], 0.0) for i in range(args.stable)]
        plan += [("drifted", args.drifted_rows, args.drift) for _ in range(args.drifted)]
        t0 = time.time() - 10 * len(plan)
        rows_out, seconds_total = [], 0.0
        print(f"world: {root}  load average: {os.getloadavg()[0]:.2f}", flush=True)
        for i, (phase, n, drift) in enumerate(plan):
            df = generate_batch(n, seed=1000 + i, drift=drift, start_id=i * 10**6)
            name = f"{i:03d}-{phase}-{n}.parquet"
            land(landing, name, df, t0 + 10 * i)
            t = time.perf_counter()
            with quiet(root / "pipeline.log"):
                out = run_pending(settings, defs, instance, echo=lambda *_: None)["churn"]
            secs = time.perf_counter() - t
            seconds_total += secs
            assert len(out) == 1, out
            o = out[0]
            rec = catalog.read_record(settings.model_dir("churn"), o.partition)
            perf, dec = rec.performance_figure, rec.decision.to_dict() if rec.decision else {}
            v, auc_s = served_auc(settings, "churn", fresh_stable)
            _, auc_d = served_auc(settings, "churn", fresh_drift)
            row = {
                "i": i,
                "phase": phase,
                "rows": rec.valid_rows if rec.valid_rows is not None else n,
                "drift": rec.drift_summary,
                "performance": perf,
                "retrain": rec.retrained,
                "trigger": dec.get("trigger"),
                "reason": dec.get("reason"),
                "candidate": o.train.version if o.train else None,
                "deployed": bool(o.train and o.train.deployed),
                "gate": [(c, p) for c, p, _ in o.train.gate] if o.train else [],
                "champion": v,
                "auc_stable": auc_s,
                "auc_drifted": auc_d,
                "seconds": round(secs, 2),
            }
            rows_out.append(row)
            dec_s = (
                (f"RETRAIN ({row['trigger']}) -> v{row['candidate']} {'deployed' if row['deployed'] else 'REJECTED'}")
                if row["retrain"]
                else "no retrain"
            )
            print(
                f"{i:3d} {phase:8s} {row['rows']:>7,} | {fmt_drift(row['drift']):14s} | "
                f"{fmt_perf(row['performance']):62s} | {dec_s:30s} | v{v} stable {auc_s:.3f} "
                f"drifted {auc_d:.3f} | {secs:5.1f}s",
                flush=True,
            )

        stable = [r for r in rows_out if r["phase"] == "stable"]
        drifted = [r for r in rows_out if r["phase"] == "drifted"]
        false_alarms = sum(r["retrain"] for r in stable)
        before = rows_out[len(stable)]  # last stable batch (or the first champion)
        recovered_at = next(
            (k + 1 for k, r in enumerate(drifted) if r["deployed"] and r["champion"] != before["champion"]), None
        )
        totals = {
            "stable_batches": len(stable),
            "stable_rows": sum(r["rows"] for r in stable),
            "false_alarms": false_alarms,
            "drifted_batches": len(drifted),
            "drifted_batches_to_recovery": recovered_at,
            "champion_before": before["champion"],
            "champion_after": rows_out[-1]["champion"],
            "served_auc_drifted_before": before["auc_drifted"],
            "served_auc_drifted_after": rows_out[-1]["auc_drifted"],
            "served_auc_stable_before": before["auc_stable"],
            "pipeline_seconds": round(seconds_total, 1),
            "load_average": os.getloadavg(),
        }
        print(json.dumps(totals, indent=1), flush=True)
        if args.markdown:
            print(
                "| # | phase | rows | drift verdict (share) | champion ROC AUC on batch [95% CI] vs holdout [CI] | "
                "decision | serving | served AUC, fresh drifted data | s |"
            )
            print("|---:|---|---:|---|---|---|---|---:|---:|")
            for r in rows_out:
                dec_s = (
                    (f"**retrain ({r['trigger']})** -> v{r['candidate']} {'deployed' if r['deployed'] else 'rejected'}")
                    if r["retrain"]
                    else "–"
                )
                print(
                    f"| {r['i']} | {r['phase']} | {r['rows']:,} | {fmt_drift(r['drift'])} | "
                    f"{fmt_perf(r['performance'])} | {dec_s} | v{r['champion']} | {r['auc_drifted']:.3f} | "
                    f"{r['seconds']:.1f} |"
                )
        if args.json:
            Path(args.json).write_text(json.dumps({"batches": rows_out, "totals": totals}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
