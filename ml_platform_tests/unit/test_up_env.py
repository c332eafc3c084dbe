"""`up`'s children: Dagster's own BetaWarning about `execution_type` (raised when a repository
converts check definitions) is not printed at every start of a dg project (the demo is one)."""

import subprocess
import sys
from pathlib import Path

from ml_platform.cli.up import child_env

ROOT = Path(__file__).resolve().parents[2]
LOAD = "import demo.definitions as d; d.defs().get_repository_def()._repository_data.get_asset_checks_defs_by_key()"


def test_a_dg_projects_definitions_load_without_dagsters_beta_warning():
    env = {**child_env(), "PYTHONPATH": str(ROOT), "ML_PLATFORM_CONFIG": str(ROOT / "ml_platform.yaml")}
    out = subprocess.run([sys.executable, "-c", LOAD], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "BetaWarning" not in out.stderr, out.stderr[-2000:]
