"""`ml-platform status` with history (benchmarks/README.md, "Status with history"): a model with
1,000 batch records and 100 registered versions (MLflow on SQLite, as `make up` makes it), then
`ml-platform status --json` timed as a user runs it (a new process: imports included).

    nice -n 15 .venv/bin/python benchmarks/status_speed.py --batches 1000 --versions 100 --repeat 3
    ... --code "$PWD" /path/to/an/older/checkout   # the same history, each checkout's `status`
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml_platform_tests.conftest import write_config  # noqa: E402


def _history(cfg: Path, batches: int, versions: int) -> None:
    from mlflow import MlflowClient

    from ml_platform.core import catalog
    from ml_platform.names import gate_checks, gate_tag
    from ml_platform.resources.registry import registry_for
    from ml_platform.runtime.instance import prepare_environment
    from ml_platform.settings import load_settings

    s = load_settings(cfg)
    prepare_environment(s)
    d = s.model_dir("churn")
    t0 = 1_700_000_000.0
    for i in range(batches):
        catalog.update_record(
            d,
            f"batch-{i:05d}.csv-{i:08x}",
            file=f"landing/batch-{i:05d}.csv",
            sha256=f"{i:064x}",
            arrival=t0 + i * 60,
            rows=2000,
            valid_rows=1990,
            quarantined_rows=10,
            labelled=True,
            status="validated",
            validated_at=t0 + i * 60 + 5,
            drift={"verdict": "no drift", "share_drifted": 0.0, "drifted_features": [], "rows": 1990},
            performance={"metric": "roc_auc", "value": 0.8, "rows": 1990},
        )
    reg = registry_for(s)
    exp = reg.experiment_id("churn")
    client = MlflowClient(s.tracking_uri)
    client.create_registered_model("churn")
    checks = gate_checks(s.models["churn"])
    for _ in range(versions):
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "holdout_roc_auc", 0.8)
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version("churn", f"{run.info.artifact_uri}/model", run.info.run_id)
        for c in checks:
            client.set_model_version_tag("churn", mv.version, gate_tag(c), "passed")
        client.set_model_version_tag("churn", mv.version, "trigger", "drift")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=1000)
    p.add_argument("--versions", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="also profile one status in this process")
    p.add_argument(
        "--code",
        nargs="+",
        default=[str(Path(__file__).resolve().parents[1])],
        help="the checkouts whose status is run",
    )
    a = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mlp-bench-status-"))
    try:
        cfg = write_config(root)
        t = time.perf_counter()
        _history(cfg, a.batches, a.versions)
        print(f"history written in {time.perf_counter() - t:.0f} s", flush=True)
        for code in a.code:
            env = {**os.environ, "PYTHONPATH": code}
            times, cpu = [], []
            for _ in range(a.repeat):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t = time.perf_counter()
                out = subprocess.run(
                    [sys.executable, "-m", "ml_platform.cli.main", "status", "--json", "--config", str(cfg)],
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=root,  # not a checkout: PYTHONPATH decides which code runs
                    check=True,
                )
                times.append(time.perf_counter() - t)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            doc = json.loads(out.stdout)
            model = doc["models"]["churn"]
            print(
                json.dumps(
                    {
                        "code": code,
                        "batches": len(model["batches"]),
                        "versions": len(model["versions"]),
                        "status_wall_s": [round(x, 2) for x in times],
                        "median_wall_s": round(statistics.median(times), 2),
                        "median_cpu_s": round(statistics.median(cpu), 2),
                        "load_average": round(os.getloadavg()[0], 1),
                        "keys": sorted(model),
                    }
                ),
                flush=True,
            )
        if a.profile:
            import cProfile
            import pstats

            from ml_platform.control.status import status
            from ml_platform.resources.endpoint import endpoint_for
            from ml_platform.resources.registry import registry_for
            from ml_platform.settings import load_settings

            s = load_settings(cfg)
            prof = cProfile.Profile()
            prof.runcall(status, s, registry_for(s), endpoint_for(s))
            pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
