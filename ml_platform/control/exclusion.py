"""`ml-platform exclude`: a person takes a bad batch out of training (and puts it back).

The mark is recorded on the batch record (``BatchRecord.excluded``: reason, who, when), so
every reader that asks ``trainable`` honours it: the training window, the challenger check's
refit and the weekly schedule's "new data". The batch's files and verdicts stay as they are."""

from __future__ import annotations

import time
from pathlib import Path

from ml_platform.core import catalog
from ml_platform.core.batch_record import BatchRecord
from ml_platform.settings import Settings


class ExclusionError(ValueError):
    """The batch named is unknown or ambiguous; the message lists what there is."""


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
    """Mark (``undo``: unmark) ``batch`` as taken out of training; returns the updated record."""
    rec = find_batch(settings, model, batch)
    mark = None if undo else {"reason": reason or "no reason given", "by": by, "at": time.time()}
    return catalog.update_record(settings.model_dir(model), rec.partition, excluded=mark)
