"""Dagster's embedded SQLite storage vs the platform's (runtime/sqlite_storage.py), side by side.

Each round runs the same small asset job N times in a fresh process per contender, on a fresh
instance directory: Dagster's default ``storage: sqlite:`` and the platform's
``storage: custom: ml_platform.runtime.sqlite_storage.SqliteStorage``, same files. Reported: CPU
and wall time per run (the process's own, after a warm-up run), median over rounds.

    .venv/bin/python benchmarks/dagster_storage.py [--runs 20] [--rounds 4] [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import json, os, sys, time
    import dagster as dg, yaml
    from pathlib import Path
    from ml_platform.runtime.instance import sqlite_storage_section
    home, contender, runs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    doc = {"telemetry": {"enabled": False}}
    doc["storage"] = sqlite_storage_section(home) if contender == "ml_platform" else {"sqlite": {"base_dir": str(home)}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(doc))

    @dg.asset
    def raw(context) -> list:
        context.log.info("read")
        return list(range(100))

    @dg.asset
    def features(raw: list) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"rows": len(raw), "mean": sum(raw) / len(raw)})

    @dg.asset(deps=[features])
    def model(context) -> None:
        context.log.info("fit")

    @dg.asset_check(asset=model)
    def gate_a() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True, metadata={"auc": 0.83})

    @dg.asset_check(asset=model)
    def gate_b() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    assets = [raw, features, model, gate_a, gate_b]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        dg.materialize(assets, instance=instance)  # warm-up: imports, the instance's first files
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(runs):
            assert dg.materialize(assets, instance=instance).success
        print(json.dumps({"cpu": (time.process_time() - c0) / runs, "wall": (time.perf_counter() - w0) / runs}))
""")


def one(contender: str, runs: int, base: str) -> dict:
    with tempfile.TemporaryDirectory(dir=base) as home:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, home, contender, str(runs)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    if out.returncode != 0:
        raise SystemExit(f"{contender} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--dir", default=None, help="where the instances live (default: the temp dir)")
    a = p.parse_args()
    got: dict[str, list[dict]] = {"dagster": [], "ml_platform": []}
    for r in range(a.rounds):
        order = list(got) if r % 2 == 0 else list(got)[::-1]  # ABBA: a machine's drift favours neither
        for contender in order:
            got[contender].append(one(contender, a.runs, a.dir))
    print(f"{a.runs} runs of a 3-asset, 2-check job per round, {a.rounds} rounds (median per run)\n")
    print("| storage | CPU per run (ms) | wall per run (ms) |\n|---|---|---|")
    med = {}
    for contender, rows in got.items():
        med[contender] = {k: statistics.median(r[k] for r in rows) * 1000 for k in ("cpu", "wall")}
        print(f"| {contender} | {med[contender]['cpu']:.0f} | {med[contender]['wall']:.0f} |")
    ratio = med["ml_platform"]["cpu"] / med["dagster"]["cpu"]
    print(f"\nml_platform's storage: {ratio:.2f}x Dagster's CPU per run")


if __name__ == "__main__":
    main()
