"""The endpoint's live sample (``serving/sample.py``) as a DataFrame, for drift on live traffic.

Files are ``<live_samples_dir>/<model>/live-<UTC stamp>-<pid>.jsonl``; a stamp sorts by
time, so the newest rows are read first and reading stops at ``max_rows``. Only rows
scored by the given model version are kept: the drift reference is that version's
training data and the score column is its output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from ml_platform.core import files
from ml_platform.names import COL_PREDICTION, COL_PROBABILITIES, COL_TS, COL_VERSION

if TYPE_CHECKING:  # `ml-platform status` reads summaries through this module: no pandas there
    import pandas as pd


@dataclass
class LiveWindow:
    frame: pd.DataFrame  # feature columns, "_ts" and the score, oldest row first
    files: list[Path] = field(default_factory=list)
    other_version_rows: int = 0  # rows of other versions in the files read
    unreadable_lines: int = 0  # lines that were not JSON objects (reported, skipped)

    @property
    def first_ts(self) -> str | None:
        return str(self.frame[COL_TS].iloc[0]) if len(self.frame) else None

    @property
    def last_ts(self) -> str | None:
        return str(self.frame[COL_TS].iloc[-1]) if len(self.frame) else None


def summary_path(model_dir: Path) -> Path:
    """The last live_drift verdict of a model (``Settings.model_dir``), for ``status``."""
    return Path(model_dir) / "live_drift" / "latest.json"


def read_summary(model_dir: Path) -> dict | None:
    try:
        return json.loads(summary_path(model_dir).read_text())
    except (OSError, ValueError):
        return None


def sample_files(sample_dir: Path) -> list[Path]:
    """Finished sample files of one model (``<live_samples_dir>/<model>``), newest first
    (hidden ``.tmp`` names are still being written)."""
    return sorted(Path(sample_dir).glob("live-*.jsonl"), key=lambda p: p.name, reverse=True)


def read_window(
    sample_dir: Path,
    version: int,
    features: list[str],
    max_rows: int,
    *,
    score_column: str,
    missing_token: str | None = None,
) -> LiveWindow:
    """The newest ``max_rows`` rows scored by ``version``. Categorical nulls were written as
    the model's ``missing_token``; they come back as nulls, as in a validated batch."""
    import numpy as np
    import pandas as pd

    rows: list[dict] = []
    win = LiveWindow(pd.DataFrame())
    for path in sample_files(sample_dir):
        if len(rows) >= max_rows:
            break
        win.files.append(path)
        found, bad = [], []
        try:
            lines = path.read_bytes().splitlines()
        except OSError as e:  # vanished or unreadable: the other files still count
            files.warn_skipped(path, f"unreadable ({e.strerror or type(e).__name__}): skipped", "ml_platform.live")
            continue
        for n, line in enumerate(lines, 1):
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                row = None
            if not isinstance(row, dict):
                win.unreadable_lines += 1
                bad.append(n)
            elif row.get(COL_VERSION) != version:
                win.other_version_rows += 1
            else:
                found.append(row)
        if bad:
            where = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            files.warn_skipped(path, f"line(s) {where} not a JSON object: skipped", "ml_platform.live")
        rows.extend(reversed(found))  # newest first while collecting
    rows = rows[:max_rows][::-1]
    cols = {c: [None if (v := r.get(c)) == missing_token else v for r in rows] for c in features}
    cols[COL_TS] = [r.get(COL_TS) for r in rows]
    probas = [r.get(COL_PROBABILITIES) for r in rows]
    if rows and all(isinstance(p, dict) for p in probas):
        # imported here: `ml-platform status` reads summaries through this module without sklearn
        from ml_platform.core.training import positive_scores

        cols[score_column] = positive_scores(np.array([list(p.values()) for p in probas], dtype=np.float64))
    else:
        cols[score_column] = pd.to_numeric(
            pd.Series([r.get(COL_PREDICTION) for r in rows], dtype=object), errors="coerce"
        )
    win.frame = pd.DataFrame(cols)
    return win
