"""The fair comparison set: holdout rows that neither the candidate nor the champion trained on.

A retrain's holdout (the newest rows, see ``selection.mark_holdout``) can reach back into
batches an older champion trained on; judged on those rows the champion looks better than it
is (seen: ROC AUC 0.866 on a candidate's holdout against 0.777 on its own). Rows are identified
across training sets by ``(_batch, _row)``: the batch's partition key and the row's position in
its (immutable) validated parquet.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ml_platform.core.selection import BATCH, HOLDOUT, ROW


@dataclass(frozen=True)
class TrainedOn:
    """The rows one model version trained on: the rows of ``batches`` minus its own holdout.
    ``rows`` holds their exact ``(_batch, _row)`` keys when the version's training set is at hand;
    None means unknown, and then every row of ``batches`` counts as trained on (safe side)."""

    version: int | None
    batches: frozenset[str]
    rows: frozenset[tuple[str, int]] | None = None

    def excludes(self, keys: pd.MultiIndex) -> pd.Series:
        """True for the keys this version trained on."""
        in_batches = keys.get_level_values(0).isin(list(self.batches))
        if self.rows is None:
            return pd.Series(in_batches, index=keys)
        return pd.Series(in_batches & keys.isin(list(self.rows)), index=keys)


def with_row_ids(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``_row``; training sets written before it existed get the row's position
    within its batch (their rows are in the validated parquet's order)."""
    if ROW in df:
        return df
    return df.assign(**{ROW: df.groupby(BATCH, sort=False).cumcount().to_numpy()})


def trained_on(training_set: pd.DataFrame | None, batches, version: int | None = None) -> TrainedOn:
    """What a version trained on, from its training set (all columns, with ``_holdout``) and the
    batches of its window (``batches.json``). ``training_set`` None: only the batches are known."""
    batches = frozenset(map(str, batches))
    if training_set is None:
        return TrainedOn(version, batches)
    df = with_row_ids(training_set)
    used = df[df[BATCH].astype(str).isin(batches) & ~df[HOLDOUT].astype(bool)]
    return TrainedOn(version, batches, frozenset(zip(used[BATCH].astype(str), used[ROW].astype(int))))


@dataclass
class ComparisonSet:
    rows: pd.DataFrame  # the fair rows, holdout order kept
    holdout_rows: int  # before exclusion
    excluded: dict  # version -> holdout rows it trained on (dropped)

    @property
    def note(self) -> str:
        dropped = {v: k for v, k in self.excluded.items() if k}
        if not dropped:
            return f"{len(self.rows)} holdout rows, none trained on by either model"
        parts = ", ".join(f"{k} trained on by v{v}" for v, k in dropped.items())
        return f"{len(self.rows)} of {self.holdout_rows} holdout rows ({parts}, dropped)"


def comparison_set(holdout: pd.DataFrame, trained: list[TrainedOn]) -> ComparisonSet:
    """The holdout rows none of ``trained`` trained on. ``holdout`` carries ``_batch`` and ``_row``
    (give older training sets their ids with ``with_row_ids`` before taking the holdout out)."""
    if ROW not in holdout or BATCH not in holdout:
        raise ValueError(f"the holdout needs the {BATCH} and {ROW} columns")
    df = holdout
    keys = pd.MultiIndex.from_arrays([df[BATCH].astype(str), df[ROW].astype(int)])
    keep = pd.Series(True, index=keys)
    excluded = {}
    for t in trained:
        hit = t.excludes(keys)
        excluded[t.version] = int(hit.sum())
        keep &= ~hit
    return ComparisonSet(df[keep.to_numpy()], len(df), excluded)
