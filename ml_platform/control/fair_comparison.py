"""What the gate compares a candidate with its champion on: the fair comparison set (holdout rows
neither trained on, ``core/comparison.py``) and both models' outputs there, each from its ONNX
graph as it serves. The IO around the pure functions: the candidate's training set, the
champion's (version tag ``training_set``) and the batches it trained on (``batches.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ml_platform.control.chain import Chain
from ml_platform.control.champion import champion_version
from ml_platform.control.promotion import version_files_of
from ml_platform.core import comparison, export, training, transform
from ml_platform.core.candidate import Candidate
from ml_platform.core.selection import BATCH, HOLDOUT
from ml_platform.resources.registry import MlflowRegistry


@dataclass
class Outputs:
    values: np.ndarray  # probabilities [N, classes] or predictions [N]
    classes: list | None


@dataclass
class FairComparison:
    judged_against: str  # the serving champion's version, or "none" (promotion checks it)
    champion_version: int | None  # None: no champion, or the candidate is the champion
    set: comparison.ComparisonSet
    y: np.ndarray
    candidate: Outputs
    champion: Outputs | None

    @property
    def rows(self) -> int:
        return len(self.set.rows)

    def typed_rows(self, target: str) -> pd.DataFrame:
        """The comparison rows with the target as the models see it (``training.target_values``):
        integral labels as ints, like the candidate's ``classes`` (a validated batch keeps labels
        as text: "0"/"1", yes/no and true/false all read "0"/"1"), a regression target as floats."""
        return self.set.rows.assign(**{target: self.y}) if len(self.set.rows) else self.set.rows


def _outputs(onnx_bytes: bytes, meta: dict, rows: pd.DataFrame, chain: Chain) -> Outputs:
    if rows.empty:
        return Outputs(np.empty(0), meta.get("classes"))
    fn, mcfg = transform.for_version(meta, chain.cfg)
    out = export.onnx_predict(export.session(onnx_bytes), transform.model_rows(rows, fn, meta), mcfg)
    return Outputs(np.asarray(out, dtype=np.float64), meta.get("classes"))


def _read_training_set(path: str | None) -> pd.DataFrame | None:
    if not path or not Path(path).is_file():
        return None
    return comparison.with_row_ids(pd.read_parquet(path))


def champion_trained_on(
    chain: Chain, registry: MlflowRegistry, version: int, among: set[str] | None = None
) -> comparison.TrainedOn:
    """What the champion trained on: its batches (``batches.json``) minus its own holdout (its
    training set). Without the training set every row of its batches counts; without the batches,
    those of its training set (all of them: a version that predates ``batches.json``). ``among``:
    only the rows of these batches are listed (the holdout's: no other row can be excluded)."""
    tags = registry.version(chain.name, version).tags
    df = _read_training_set(tags.get("training_set"))
    batches = registry.version_batches(chain.name, version)
    if batches is None:
        batches = [] if df is None else df[BATCH].astype(str).unique()
    if df is not None and among is not None:
        df = df[df[BATCH].astype(str).isin(among)]
    return comparison.trained_on(df, batches, version)


def fair_comparison(chain: Chain, registry: MlflowRegistry, candidate: Candidate) -> FairComparison:
    cfg = chain.cfg
    df = _read_training_set(candidate.training_set)
    if df is None:
        raise FileNotFoundError(f"candidate v{candidate.version}: training set {candidate.training_set} is gone")
    holdout = df[df[HOLDOUT].astype(bool)].drop(columns=[HOLDOUT])
    serving = champion_version(chain.settings, chain.name)
    champ = None if serving in (None, candidate.version) else serving
    trained = [comparison.trained_on(df, candidate.batches or df[BATCH].astype(str).unique(), candidate.version)]
    if champ is not None:
        trained.append(champion_trained_on(chain, registry, champ, among=set(holdout[BATCH].astype(str))))
    cs = comparison.comparison_set(holdout, trained)
    cand = _outputs(candidate.files.onnx.read_bytes(), json.loads(candidate.files.serving.read_text()), cs.rows, chain)
    champ_out = None
    if champ is not None:
        files = version_files_of(chain.settings, registry, chain.name, champ)
        champ_out = _outputs(files.onnx.read_bytes(), json.loads(files.serving.read_text()), cs.rows, chain)
    return FairComparison(
        "none" if serving is None else str(serving),
        champ,
        cs,
        training.target_values(cs.rows, cfg) if len(cs.rows) else np.empty(0),
        cand,
        champ_out,
    )
