"""Why the champion moved: an append-only audit log, and the intent of the move in progress.

A champion move writes its ``Intent`` first (fsynced), then publishes, moves the place of
record, updates the mirror, tells the endpoint and appends one ``AuditEntry`` carrying the
intent's id, and finally clears the intent. Whoever finds an intent without its audit entry
(the next `ml-platform run`, the control-plane sensor, `status`, `serve` at start) finishes it.

The audit file has one writer at a time (the move lock), one JSON line per entry, each
fsynced; a torn last line (a writer killed mid-append) is skipped by readers and cut off
by the next writer.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ml_platform.core import files
from ml_platform.core.batch_record import check_types

AUDIT_FILE = "audit.jsonl"
# entries that record a decision without moving the champion: a candidate staged or refused (or,
# passed live, left to await a person's approval), a person rejected a candidate, took a batch out
# of training (``ml-platform exclude``) or put it back (``--undo``)
DECISION_KINDS = ("reject", "stage", "refuse", "await", "exclude", "include")
INTENT_FILE = "champion_intent.json"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Intent:
    """A champion move that has started: enough to finish it after a crash."""

    model: str
    to: int | None  # None: the model is left without a champion (first deploy rolled back)
    previous: int | None
    actor: str
    trigger: str
    reason: str
    kind: str  # deploy | rollback | auto-rollback | repair
    gate: dict = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: str = field(default_factory=now_iso)

    @classmethod
    def from_dict(cls, d: dict) -> Intent:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class AuditEntry:
    """One champion move, as it happened."""

    at: str
    model: str
    previous: int | None
    to: int | None
    actor: str
    trigger: str
    reason: str
    kind: str
    gate: dict
    endpoint: str
    intent: str
    candidate: int | None = None  # the version a person rejected (kind "reject": nothing moved)

    @property
    def moved(self) -> bool:
        """A champion move (deploy, rollback, repair...), not a decision that left it in place."""
        return self.kind not in DECISION_KINDS

    def to_dict(self) -> dict:
        d = asdict(self)
        d["from"] = d.pop("previous")  # the file's field name (older entries use it)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AuditEntry:
        """Raises TypeError naming the first field of the wrong type (``"at": null``), as a
        batch record does (``batch_record.check_types``): the reader skips the line, naming it."""
        entry = cls(
            at=d.get("at", ""),
            model=d.get("model", ""),
            previous=d.get("from"),
            to=d.get("to"),
            actor=d.get("actor", ""),
            trigger=d.get("trigger", ""),
            reason=d.get("reason", ""),
            kind=d.get("kind", ""),
            gate=d.get("gate") or {},
            endpoint=d.get("endpoint", ""),
            intent=d.get("intent", ""),
            candidate=d.get("candidate"),
        )
        try:
            check_types(cls, {f: getattr(entry, f) for f in cls.__dataclass_fields__})
        except TypeError as e:  # named as the file spells it
            raise TypeError(str(e).replace("previous is ", "from is ", 1)) from None
        return entry


def append(model_dir: Path, entry: AuditEntry) -> None:
    """Append one entry (fsynced). A torn tail left by a killed writer is cut off first."""
    line = (json.dumps(entry.to_dict(), default=str) + "\n").encode()
    files.append_line(model_dir / AUDIT_FILE, line, f"the audit entry ({entry.kind})")


def read(model_dir: Path) -> list[AuditEntry]:
    """Every complete entry, oldest first (a torn or corrupt line is skipped)."""
    path = model_dir / AUDIT_FILE
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for n, line in enumerate(lines, 1):
        try:
            out.append(AuditEntry.from_dict(json.loads(line)))
        except (ValueError, TypeError, AttributeError) as e:
            why = f"{type(e).__name__}: {e}" if type(e) is TypeError else type(e).__name__  # a field: named
            files.warn_skipped(path, f"line {n} is not an audit entry ({why}): skipped", "ml_platform.audit")
    return out


def write_intent(model_dir: Path, intent: Intent) -> None:
    files.write_json(model_dir / INTENT_FILE, asdict(intent), "the champion move's intent")


def read_intent(model_dir: Path) -> Intent | None:
    try:
        return Intent.from_dict(json.loads((model_dir / INTENT_FILE).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):  # torn by a crash before os.replace cannot happen; be safe
        return None


def clear_intent(model_dir: Path) -> None:
    try:
        os.unlink(model_dir / INTENT_FILE)
    except FileNotFoundError:
        return
    files.fsync_dir(model_dir)
