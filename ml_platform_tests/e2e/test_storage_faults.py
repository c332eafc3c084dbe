"""Storage faults (issue 20, deliver 8): a write that cannot complete (a full disk, a quota, a
file-size limit) gives one line naming the path and what was being written, exit 1, nothing
half-written; the next command says what happened.

The fault is real and needs no root: the process runs under ``RLIMIT_FSIZE`` (set in the child
by ``preexec_fn``), so a write past the limit fails with EFBIG exactly as ENOSPC would fail it."""

import json
import resource
import subprocess
import sys
import textwrap

import pytest

from ml_platform.core.simulate import generate_batch
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import free_port, write_config
from ml_platform_tests.e2e import warm

pytestmark = pytest.mark.e2e


def _limited(limit: int):
    def pre():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return pre


def _cli(config, *args, limit=None):
    return warm.run(["--config", config, *args], cwd=config.parent, fsize=limit)


def _leftovers(root):
    return sorted(str(p) for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name)


def test_a_full_disk_during_run_is_one_line_exit_1_and_the_next_command_says_so(tmp_path):
    config = write_config(tmp_path, port=free_port(), extra="automation: {settle_seconds: 0}\n")
    s = load_settings(config)
    first = _cli(config, "run")  # the instance and the MLflow store exist (all far below the limit)
    assert first.returncode == 0, first.stderr[-2000:]
    big = s.landing_dir("churn") / "big.csv"
    generate_batch(60_000, seed=1).to_csv(big, index=False)
    limit = big.stat().st_size // 2
    assert all(p.stat().st_size < limit // 2 for p in s.storage.rglob("*") if p.is_file())

    full = _cli(config, "run", limit=limit)
    assert full.returncode == 1, full.stdout[-2000:] + full.stderr[-2000:]
    # The command's own word is one line, the last (the step's failure above it is Dagster's
    # event log, as for any failed step); no Python traceback escapes.
    line = full.stderr.strip().splitlines()[-1]
    assert "Traceback (most recent call last)" not in full.stderr, full.stderr[-3000:]
    assert line.startswith("error: could not write the raw copy of big.csv to "), full.stderr[-3000:]
    assert str(s.model_dir("churn") / "raw") in line and "larger than this process may write" in line
    assert _leftovers(s.storage) == [], "a half-written file was left behind"
    assert not list((s.model_dir("churn") / "raw").rglob("big.csv"))

    after = _cli(config, "status")
    assert after.returncode == 0, after.stderr[-2000:]
    assert "note: the last `ml-platform run` stopped: could not write the raw copy of big.csv" in after.stderr
    assert "note:" not in _cli(config, "status").stderr  # said once


def test_every_state_writer_fails_whole_under_a_size_limit(tmp_path):
    """The accessors themselves, in a process limited to 2 KB per file: a batch record, an
    audit entry, a version file and a parquet copy each fail naming path and purpose and leave
    the previous content intact; no temporary file remains."""
    script = textwrap.dedent(f"""
        import json, pandas as pd
        from pathlib import Path
        from ml_platform.core import audit, catalog, files
        from ml_platform.serving.store import ModelStore
        root = Path({str(tmp_path)!r})
        out = {{}}
        def attempt(name, fn):
            try:
                fn()
                out[name] = "written"
            except files.StateWriteError as e:
                out[name] = str(e)
        catalog.update_record(root, "p1", status="validated")
        attempt("record", lambda: catalog.update_record(root, "p1", reason="x" * 5000))
        entry = audit.AuditEntry("now", "m", None, 1, "me", "manual", "y" * 100, "deploy", {{}}, "ok", "i1")
        audit.append(root, entry)
        attempt("audit", lambda: audit.append(root, audit.AuditEntry(**{{**entry.__dict__, "reason": "z" * 5000}})))
        attempt("version", lambda: ModelStore(root / "serving").publish("m", 1, b"o" * 5000, {{"version": 1}}))
        df = pd.DataFrame({{"a": range(5000)}})
        attempt("parquet", lambda: files.write_with(root / "v.parquet", lambda t: df.to_parquet(t), "the rows"))
        print(json.dumps(out))
    """)
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, preexec_fn=_limited(2048)
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["record"].startswith(f"could not write the record of batch p1 to {tmp_path}/batches/p1.json: ")
    assert out["audit"].startswith(f"could not write the audit entry (deploy) to {tmp_path}/audit.jsonl: ")
    assert out["version"].startswith("could not write m v1's ONNX graph to ")
    assert out["parquet"].startswith("could not write the rows to ")
    assert all("larger than this process may write" in v for v in out.values()), out
    assert json.loads((tmp_path / "batches" / "p1.json").read_text()) == {"partition": "p1", "status": "validated"}
    assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == 1  # the old entry, no torn line
    assert not (tmp_path / "serving" / "m" / "v1.onnx").exists() and not (tmp_path / "v.parquet").exists()
    assert _leftovers(tmp_path) == []
