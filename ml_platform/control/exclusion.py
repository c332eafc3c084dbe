"""`ml-platform exclude`: a person takes a bad batch out of training (and puts it back).

The mark is recorded on the batch record (``BatchRecord.excluded``: reason, who, when), so
every reader that asks ``trainable`` honours it: the training window, the challenger check's
refit and the weekly schedule's "new data". The batch's files and verdicts stay as they are."""

from __future__ import annotations

import time
from pathlib import Path

from ml_platform.control.champion import champion_version
from ml_platform.control.promotion import move_lock
from ml_platform.core import audit, catalog
from ml_platform.core.batch_record import BatchRecord
from ml_platform.settings import Settings


class ExclusionError(ValueError):
    """The batch named is unknown or ambiguous (the message lists what there is), or no reason was given."""


class Unchanged(ValueError):
    """The batch is already out of training (or, for an undo, in it): nothing was changed."""


def find_batch(settings: Settings, model: str, batch: str) -> BatchRecord:
    """The record of ``batch``: a partition key, or the landing file's name when one batch has it."""
    recs = catalog.read_records(settings.model_dir(model))
    exact = [r for r in recs if r.partition == batch]
    if exact:
        return exact[0]
    by_file = [r for r in recs if r.file and Path(r.file).name == batch]
    if len(by_file) == 1:
        return by_file[0]
    if by_file:
        raise ExclusionError(
            f"{model}: {len(by_file)} batches came from a file named {batch!r}: name one by its partition "
            f"({', '.join(r.partition for r in by_file)})"
        )
    known = ", ".join(r.partition for r in recs[-5:]) or "none"
    raise ExclusionError(f"{model}: no batch {batch!r} (a partition key or a landing file name); newest: {known}")


def exclude(settings: Settings, model: str, batch: str, *, reason: str, by: str, undo: bool = False) -> BatchRecord:
    """Mark (``undo``: unmark) ``batch`` as taken out of training, and say so in the audit
    (kind ``exclude`` / ``include``: a decision, the champion stays); returns the updated record."""
    rec = find_batch(settings, model, batch)
    reason = " ".join((reason or "").split())
    if not undo and not reason:
        raise ExclusionError("--reason is required: say why the batch leaves training (it goes in the audit)")
    mark = None if undo else {"reason": reason, "by": by, "at": time.time()}
    with move_lock(settings, model):  # the audit's one writer at a time
        now = catalog.read_record(settings.model_dir(model), rec.partition) or rec
        if undo and not now.excluded:
            raise Unchanged(f"{model}: batch {rec.partition} is in training already: nothing changed")
        if not undo and now.excluded:
            was = now.excluded
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(float(was.get("at") or 0)))
            raise Unchanged(
                f"{model}: batch {rec.partition} is already out of training (since {when} UTC, by "
                f"{was.get('by', '?')}: {was.get('reason', '')}): nothing changed"
            )
        reason = reason or "no reason given"
        out = catalog.update_record(settings.model_dir(model), rec.partition, excluded=mark)
        current = champion_version(settings, model)
        audit.append(
            settings.model_dir(model),
            audit.AuditEntry(
                at=audit.now_iso(),
                model=model,
                previous=current,
                to=current,
                actor=by,
                trigger="exclusion",
                reason=(f"batch {rec.partition} back in training" if undo else f"batch {rec.partition} out of training")
                + f": {reason}",
                kind="include" if undo else "exclude",
                gate={},
                endpoint="unchanged",
                intent="",
            ),
        )
    return out


def observation(model: str, rec: BatchRecord):
    """The mark as an observation on the batch's validated_batch partition (the UI's asset page)."""
    import dagster as dg

    mark = rec.excluded or {}
    meta = {"excluded": bool(mark)}
    if mark:
        meta.update(excluded_by=str(mark.get("by", "")), exclusion_reason=str(mark.get("reason", "")))
    return dg.AssetObservation(
        asset_key=dg.AssetKey([model, "validated_batch"]), partition=rec.partition, metadata=meta
    )
