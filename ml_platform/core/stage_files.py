"""The endpoint's evidence files for a staged candidate (``serving/staging.py``), counted without
pandas or numpy: what `status` and the staging sensor need on every look."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import orjson


def evidence_files(model_dir: Path, version: int) -> list[Path]:
    """``stage-v<N>-<stamp>-<pid>.jsonl`` of one version (stamps start with the year)."""
    return sorted(Path(model_dir).glob(f"stage-v{version}-2*.jsonl"))


def count_rows(model_dir: Path, version: int) -> int:
    """Rows mirrored so far (both outputs recorded), over every worker and restart."""
    n = 0
    for p in evidence_files(model_dir, version):
        for line in p.read_bytes().splitlines():
            try:
                n += int(orjson.loads(line).get("rows", 0))
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                continue
    return n


def failures(model_dir: Path, version: int) -> list[str]:
    """Why the endpoint gave up on the version (a canary rolled back live, a load failure)."""
    out = []
    for p in sorted(Path(model_dir).glob(f"stage-v{version}-failed-*.json")):
        try:
            out.append(str(orjson.loads(p.read_bytes()).get("reason")))
        except (OSError, orjson.JSONDecodeError, AttributeError):
            out.append(f"failed (unreadable marker {p.name})")
    return out


def progress_line(rec: dict, rows: int) -> str:
    """ "v5 in shadow behind v4: 312/500 requests" (``rec``: the staged record)."""
    mode, champion, need = rec.get("mode", "shadow"), rec.get("champion"), rec.get("min_requests")
    return f"v{rec['version']} in {mode} behind v{champion}: {rows}/{need} requests"


def expired(staged: dict, max_hours: float, now: datetime) -> bool:
    """Whether a stage started over ``max_hours`` ago (a record without a start never expires)."""
    try:
        started = datetime.fromisoformat(staged["started_at"])
    except (KeyError, TypeError, ValueError):
        return False
    return (now - started).total_seconds() > max_hours * 3600
