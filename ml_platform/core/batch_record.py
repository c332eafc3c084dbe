"""The batch record: what the catalog keeps about one ingested batch, typed.

Ingest, monitoring and the retrain policy each write their part of it (``catalog.update_record``)
and a dozen readers (policy, selection, sensors, status, the payoff ledger, benchmarks) read
it. One dataclass with one accessor per derived fact keeps them from each re-deriving it from
a free dict (``(rec.get("performance") or {}).get("value")`` in ten places, each with its own
default). Nested sections stay the dicts their writers produce: ``drift`` (monitoring's
``drift_summary``), ``performance`` / ``estimate`` (``estimate.Performance.to_dict()`` or a
``skipped`` / ``reason`` note), ``decision`` is a ``Decision`` (below).

The JSON on disk keeps its shape: unset fields (None) are left out, as before they were never
written; keys this class does not know (older or newer stores) are kept in ``extra`` and written back.
"""

from __future__ import annotations

import functools
import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class Decision:
    """The retrain policy's answer for one batch (``core/policy.decide``), as recorded on it."""

    retrain: bool
    # arrival | drift | performance | concept | challenger | estimated_performance | schedule | code | manual | none
    trigger: str
    reason: str
    # For drift / performance retrains: the first batch of the new regime. Training on the
    # regime alone (when it holds enough rows) recovers faster than diluting it in old data.
    regime_start: str | None = None
    at: float | None = None  # when it was recorded (epoch seconds; cooldown reads it)
    run_id: str | None = None  # the train run that acted on a retrain
    # A retrain claimed by the process that will launch its run ("sensor" or "run <pid>@<host>"),
    # recorded before the run exists so no other process decides it again (control/decisions.py).
    claimed_by: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | Decision | None) -> Decision | None:
        if isinstance(d, Decision):
            return d
        if not d:  # None or {}: not decided
            return None
        if not isinstance(d, dict):
            raise TypeError(f"'decision' is a JSON {type(d).__name__}, not an object")
        known = {k: d[k] for k in _DECISION_FIELDS if k in d}
        check_types(cls, known, "decision.")
        return cls(**{"trigger": "none", "reason": "", **known})


@dataclass
class BatchRecord:
    partition: str
    # raw_batch: the landing file and its immutable copy
    file: str | None = None  # the landing file's path
    stored_path: str | None = None  # the raw copy in storage
    sha256: str | None = None
    size: int | None = None
    arrival: float | None = None  # the landing file's mtime (arrival order)
    rows: int | None = None  # rows the file held
    ingested_at: float | None = None
    ingest_run: str | None = None  # the Dagster run that copied it (a later arrival run of it skips)
    status: str | None = None  # raw | validated | rejected | failed
    reason: str | None = None  # why failed / rejected, and the batch's flags
    refused: bool = False  # never copied (a link, outside the landing dir)
    # validated_batch
    valid_rows: int | None = None
    quarantined_rows: int | None = None
    invalid_share: float | None = None
    labelled: bool | None = None  # None: not validated yet
    single_class: Any = None  # the one target class, when there is only one
    flags: list | None = None
    quarantine_reasons: list | None = None  # the first few
    duplicate_ids: int | None = None
    duplicate_ids_within_batch: int | None = None
    validated_path: str | None = None
    validated_at: float | None = None
    # monitoring (against the champion serving at the time) and the retrain policy
    predictions: dict | None = None
    drift: dict | None = None
    performance: dict | None = None
    estimate: dict | None = None
    decision: Decision | None = None
    # `ml-platform exclude`: taken out of every training window by a person ({"reason", "by", "at"})
    excluded: dict | None = None
    extra: dict = field(default_factory=dict)  # keys this class does not know, kept on rewrite

    # ---- (de)serialisation ----------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: dict) -> BatchRecord:
        known = {k: v for k, v in d.items() if k in FIELDS}
        extra = {k: v for k, v in d.items() if k not in FIELDS}
        check_types(cls, {k: v for k, v in known.items() if k != "decision"})
        if "decision" in known:
            known["decision"] = Decision.from_dict(known["decision"])
        return cls(**known, extra=extra)

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            if isinstance(v, Decision):
                v = v.to_dict()
            if f.name == "partition" or v is not None and not (f.name == "refused" and v is False):
                out[f.name] = v
        return {**out, **self.extra}

    # ---- one accessor per fact ------------------------------------------------------------

    @property
    def is_validated(self) -> bool:
        return self.status == "validated"

    @property
    def unlabelled(self) -> bool:
        """Validation found no labels (a record not validated yet is not known unlabelled)."""
        return self.labelled is False

    @property
    def trainable(self) -> bool:
        """Validated, labelled and not excluded: a batch the training set draws from."""
        return self.is_validated and not self.unlabelled and not self.excluded

    @property
    def validated_rows_path(self) -> str | None:
        """The validated rows' parquet, for a batch that has them (validated or rejected)."""
        return self.validated_path if self.status in ("validated", "rejected") and self.validated_path else None

    @property
    def row_count(self) -> int:
        """Valid rows once validated, else the file's rows (0 when unknown)."""
        return int((self.valid_rows if self.valid_rows is not None else self.rows) or 0)

    @property
    def landed_at(self) -> float:
        """Epoch seconds: the landing file's time, else the ingest's, else 0."""
        return float(self.arrival or self.ingested_at or 0)

    @property
    def drift_summary(self) -> dict:
        return self.drift or {}

    @property
    def drift_verdict(self) -> str | None:
        return self.drift_summary.get("verdict")

    @property
    def drifted(self) -> bool:
        return self.drift_verdict == "drifted"

    @property
    def performance_figure(self) -> dict:
        """The measured figure (``Performance.to_dict``), or ``{"skipped": why}``, or {}."""
        return self.performance or {}

    @property
    def estimate_figure(self) -> dict:
        """The CBPE figure (``Performance.to_dict``), or ``{"method": "none", "reason": why}``, or {}."""
        return self.estimate or {}

    @property
    def measured_value(self) -> float | None:
        return self.performance_figure.get("value")

    @property
    def estimated_value(self) -> float | None:
        return self.estimate_figure.get("value")

    def dropped(self, min_drop: float = 0.0) -> bool:
        """The measured or (without labels) the estimated figure shows a drop (``figure_dropped``)."""
        return figure_dropped(self.performance_figure, min_drop) or figure_dropped(self.estimate_figure, min_drop)

    @property
    def concept_check(self) -> dict:
        """The labels against the champion's calibration (``ConceptCheck.to_dict``), or {}."""
        return self.performance_figure.get("concept") or {}

    @property
    def concept_moved(self) -> bool:
        """The labels no longer follow the champion's calibrated probabilities (significant)."""
        return bool(self.concept_check.get("significant"))

    @property
    def challenger_check(self) -> dict:
        """A refit on the batches before it against the champion on this batch
        (``ChallengerCheck.to_dict``), or {}."""
        return self.performance_figure.get("challenger") or {}

    @property
    def retraining_pays(self) -> bool:
        """The challenger check measured a gain of at least ``retrain.challenger_min_gain``."""
        return bool(self.challenger_check.get("pays"))

    def shifted(self, min_drop: float = 0.0) -> bool:
        """The batch differs from what the champion knows: drifted, or its metric dropped."""
        return self.drifted or self.dropped(min_drop)

    @property
    def monitored_versions(self) -> set[int]:
        """Every champion version the batch's evidence was measured against. Each monitoring step
        reads the champion pointer itself, so a champion moved during the ingest run leaves
        predictions and performance against the old one and drift against the new one."""
        seen = (
            self.drift_summary.get("champion_version"),
            (self.predictions or {}).get("model_version"),
            self.performance_figure.get("champion_version"),
            self.estimate_figure.get("champion_version"),
        )
        return {int(v) for v in seen if isinstance(v, int | str) and str(v).isdigit()}

    @property
    def decided(self) -> bool:
        return bool(self.decision)

    @property
    def retrained(self) -> bool:
        """The retrain policy decided a retrain on this batch."""
        return self.decision is not None and self.decision.retrain


def figure_dropped(p: dict, min_drop: float = 0.0) -> bool:
    """A performance figure (``Performance.to_dict``, measured or estimated) shows a significant
    drop of at least ``min_drop`` (``retrain.min_drop``: on a near-perfect holdout a 1e-5 drop
    can be "significant")."""
    return bool(p.get("significant")) and float(p.get("drop") or 0.0) >= min_drop


def check_types(cls, values: dict, prefix: str = "") -> None:
    """Raise TypeError naming the first field whose JSON value is not of the field's type (a
    hand-edited or foreign record: ``"status": 5`` must not crash every reader later)."""
    allowed_of = _field_types(cls)
    for key, value in values.items():
        allowed = allowed_of.get(key)
        if allowed is None:
            continue
        if value is None and type(None) in allowed:
            continue
        if isinstance(value, bool) and bool not in allowed or not isinstance(value, tuple(allowed)):
            want = " or ".join("null" if t is type(None) else _JSON.get(t, t.__name__) for t in allowed)
            raise TypeError(f"{prefix}{key} is {json.dumps(value)[:40]}, expected {want}")


_JSON = {
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true/false",
    dict: "an object",
    list: "a list",
}


@functools.cache
def _field_types(cls) -> dict:
    return {k: _allowed(h) for k, h in typing.get_type_hints(cls).items()}


def _allowed(hint) -> tuple | None:
    """The runtime types a JSON value of this annotation may have; None: anything."""
    if hint is None or hint is Any:
        return None
    args = (
        typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else (hint,)
    )
    out = []
    for a in args:
        if a is float:
            out += [float, int]
        elif a in (str, int, bool, dict, list, type(None)):
            out.append(a)
        else:
            return None  # a nested record (Decision): checked by its own from_dict
    return tuple(out)


FIELDS = frozenset(f.name for f in fields(BatchRecord)) - {"extra"}
_DECISION_FIELDS = tuple(f.name for f in fields(Decision))
