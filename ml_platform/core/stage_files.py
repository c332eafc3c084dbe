"""The endpoint's evidence files for a staged candidate (``serving/staging.py``), counted without
pandas or numpy: what `status` and the staging sensor need on every look."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson

# Copies the worker scored itself, after answers (serving/staging.py, Stage.score_due), kept as
# the records it built: blocks of (JSON head, marshal body), each prefixed by its length. Decoded
# only on the reader's side (core/staging.frame_line): nothing beside the worker works on them.
FRAMES = ".frames"
_LEN = struct.Struct("<I")


def evidence_files(model_dir: Path, version: int) -> list[Path]:
    """``stage-v<N>-<stamp>-<pid>.jsonl`` (blocks the scorer scored) and ``.frames`` (rows the
    worker scored) of one version (stamps start with the year)."""
    d = Path(model_dir)
    return sorted([*d.glob(f"stage-v{version}-2*.jsonl"), *d.glob(f"stage-v{version}-2*{FRAMES}")])


def pack_block(head: dict, body: bytes) -> bytes:
    """One block of a ``.frames`` file: ``head["records"]`` marshal records (version 2)."""
    h = orjson.dumps(head)
    return _LEN.pack(len(h)) + h + _LEN.pack(len(body)) + body


def frame_blocks(data: bytes) -> Iterator[tuple[dict, bytes]]:
    """The (head, body) blocks of a ``.frames`` file; a torn or unreadable block ends it."""
    i, end = 0, len(data)
    while i + 4 <= end:
        (n,) = _LEN.unpack_from(data, i)
        if i + 8 + n > end:
            return
        try:
            head = orjson.loads(data[i + 4 : i + 4 + n])
        except orjson.JSONDecodeError:
            return
        i += 4 + n
        (m,) = _LEN.unpack_from(data, i)
        if i + 4 + m > end or not isinstance(head, dict):
            return
        yield head, data[i + 4 : i + 4 + m]
        i += 4 + m


def count_rows(model_dir: Path, version: int) -> int:
    """Rows mirrored so far (both outputs recorded), over every worker and restart."""
    n = 0
    for p in evidence_files(model_dir, version):
        if p.suffix == FRAMES:
            for h, _ in frame_blocks(p.read_bytes()):
                try:
                    n += int(h.get("records", 0))
                except (TypeError, ValueError):
                    continue
            continue
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


# How a stage that was not judged on its evidence is recorded (``live_shadow``'s reason starts so):
# the payoff ledger tells a person's rollback and a timeout from the gate's refusals by them.
ROLLED_BACK_BY = "rolled back by "
NO_EVIDENCE = "no evidence: "


def rolled_back_reason(actor: str, mode: str) -> str:
    return f"{ROLLED_BACK_BY}{actor} during its {mode}"


WAITING_FOR_LABELS = "waiting for labelled live rows to decide, until max_hours"


def labels_wait_path(model_dir: Path, version: int) -> Path:
    """A shadow whose only failures are the sanity bars waits here for labelled live rows
    (control/staging.judge_and_conclude): ``{"stamp": catalog.records_stamp when judged,
    "started_at": the stage's, "since": iso, "labelled_rows": n, "need": n, "reason": ...}``."""
    return Path(model_dir) / f"labels-wait-v{version}.json"


def labels_wait(model_dir: Path, staged: dict) -> dict | None:
    """The wait of this stage (not one left by an earlier stage of the same version), or None."""
    if staged.get("version") is None:
        return None
    try:
        rec = orjson.loads(labels_wait_path(model_dir, staged["version"]).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) and rec.get("started_at") == staged.get("started_at") else None


def waiting_line(wait: dict) -> str:
    rows = f"{wait.get('labelled_rows', 0)}/{wait.get('need', '?')} labelled live rows; "
    return f"{WAITING_FOR_LABELS} ({rows}{wait.get('reason', '')})"


def who_answers(mode: str) -> str:
    """What a client gets while a candidate is staged in ``mode`` ("shadow" or "canary")."""
    if mode == "canary":
        return "the candidate answers its canary share of requests, the champion the rest, until live_shadow decides"
    return "the champion answers every request until live_shadow decides"


def expired(staged: dict, max_hours: float, now: datetime) -> bool:
    """Whether a stage started over ``max_hours`` ago (a record without a start never expires)."""
    try:
        started = datetime.fromisoformat(staged["started_at"])
    except (KeyError, TypeError, ValueError):
        return False
    return (now - started).total_seconds() > max_hours * 3600
