"""Metadata a person reads in the Dagster UI: tables, plots, bars and labels.

The UI shows a TableMetadataValue inline on the asset overview (markdown only when it is under
1,000 characters, so a table in markdown or an embedded PNG hides behind a click). Use ``table``
for every DataFrame a person looks at, ``plot`` for a chart, ``bar`` for a chart that must be
visible at a glance (a column of the table), ``display_name`` for a label. Numbers go through
``figures`` (rounded to what matters; identifiers and constants as text, not plotted), and a
one-line verdict leads under the ``VERDICT`` key.
"""

from __future__ import annotations

import base64
import datetime as _dt
import math
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from ml_platform.core import audit
from ml_platform.core.candidate import SCORE
from ml_platform.names import COL_REASON, COL_ROW

# ------------------------------------------------------------------ figures a person reads
VERDICT = "Verdict"
"""The key of the one-line verdict an asset or check puts first. The UI lists a check's metadata
by key in code-point order (upper case before lower case) and a materialization's in insertion
order: a capital first letter, put first, leads in both, ahead of every lower-case key."""

LABELS = frozenset(
    {
        "candidate_version",
        "champion_version",
        "budget_ms",
        "threshold",
        "max_regression",
        "min_rows",
        "confidence",
        "resamples",
        "atol",
        "rtol",
        "tolerance",
    }
)
"""Numeric figures that are identifiers or configured constants. The UI plots every numeric
entry of an asset's or check's events over time; these go in as text, so they are not plotted."""


def rounded(value: float, kind: str = "metric") -> float:
    """``value`` rounded to what a person reads: ``metric`` 4 decimals (0.8356), ``share`` (a share
    or rate) 3 decimals, ``ms`` (a latency) 3 significant digits (0.135), ``p`` (a p-value) and
    ``small`` (a tiny difference) 3 significant figures (1.74e-05). Not finite: as it is."""
    x = float(value)
    if not math.isfinite(x):
        return x
    if kind == "metric":
        return round(x, 4)
    if kind == "share":
        return round(x, 3)
    if kind in ("ms", "p", "small"):
        return float(f"{x:.3g}")
    raise ValueError(f"unknown kind of figure {kind!r}")


def kind_of(key: str) -> str:
    """The ``rounded`` kind of a figure, by its metadata key."""
    k = key.lower()
    if "p_value" in k:
        return "p"
    if k.endswith("_ms"):
        return "ms"
    if "share" in k or k.endswith("_rate") or "fraction" in k:
        return "share"
    if "diff" in k or k in ("atol", "rtol", "tolerance"):
        return "small"
    return "metric"


def figure(key: str, value: object) -> object:
    """One figure as metadata: a float rounded by its key (``kind_of``), an identifier or a
    constant (``LABELS``) as text, anything else as it is."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        if key in LABELS:
            return dg.MetadataValue.text(f"{value:g}" if isinstance(value, (float, np.floating)) else str(value))
        if isinstance(value, (float, np.floating)):
            return rounded(value, kind_of(key))
        return int(value)
    return value


def figures(values: dict) -> dict:
    """``figure`` of every entry, in order."""
    return {k: figure(k, v) for k, v in values.items()}


def md_table(df: pd.DataFrame, max_rows: int = 20) -> dg.MetadataValue:
    """A small DataFrame as a markdown table (the UI renders it)."""
    shown = df.head(max_rows)
    text = shown.to_markdown(index=False) if len(shown) else "_none_"
    if len(df) > max_rows:
        text += f"\n\n… {len(df) - max_rows} more rows"
    return dg.MetadataValue.md(text)


DISPLAY_NAMES = {SCORE: "model score", COL_ROW: "row", COL_REASON: "reason"}


def display_name(name: object) -> str:
    """The label a person reads for an internal column name (``__score__`` -> "model score")."""
    return DISPLAY_NAMES.get(str(name), str(name))


def _cell(v: object) -> str | int | float | bool | None:
    """One table cell: missing (None, NaN, NaT) is an empty cell, never the text 'nan'/'None'."""
    if v is None or v is pd.NaT:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return round(float(v), 6) if math.isfinite(v) else (None if math.isnan(v) else str(float(v)))
    if isinstance(v, (pd.Timestamp, _dt.datetime, _dt.date)):
        return v.isoformat()
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def _column_type(s: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(s):
        return "bool"
    if pd.api.types.is_integer_dtype(s):
        return "int"
    if pd.api.types.is_float_dtype(s):
        return "float"
    return "string"


def table(df: pd.DataFrame, max_rows: int = 50, empty: str = "none") -> dg.MetadataValue:
    """A DataFrame as a TableMetadataValue with its schema (shown inline in the UI).

    Column names go through ``display_name``; missing cells stay empty. Rows beyond
    ``max_rows`` are counted in a last row; an empty frame is the text ``empty``."""
    if df.empty:
        return dg.MetadataValue.text(empty)
    df = df.reset_index(drop=True) if not isinstance(df.index, pd.RangeIndex) else df
    names = [display_name(c) for c in df.columns]
    types = [_column_type(df[c]) for c in df.columns]
    records = [
        dg.TableRecord({n: _cell(v) for n, v in zip(names, row)})
        for row in df.head(max_rows).itertuples(index=False, name=None)
    ]
    if len(df) > max_rows:  # say how much is not shown (the first column becomes text)
        records.append(
            dg.TableRecord({n: (f"… {len(df) - max_rows} more rows" if i == 0 else None) for i, n in enumerate(names)})
        )
        types[0] = "string"
    schema = dg.TableSchema(columns=[dg.TableColumn(n, t) for n, t in zip(names, types)])
    return dg.MetadataValue.table(records, schema=schema)


def plot(png: bytes, title: str) -> dg.MetadataValue:
    """A PNG chart as metadata: Dagster 1.13 has no image metadata type, so it is markdown
    with an embedded image (the UI opens it with "[Show Markdown]"); pair it with ``bar``
    columns in a ``table`` for what must be seen without a click."""
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})")


def bar(ratio: float | None, full: float = 2.0, width: int = 10) -> str | None:
    """A text bar for a table cell: ``ratio`` of a limit (1.0 = at the limit), ``full`` fills it.
    E.g. bar(1.5) == "███████▌░░ 1.50×"."""
    if ratio is None or not math.isfinite(ratio):
        return None
    eighths = int(round(min(max(ratio, 0.0), full) / full * width * 8))
    blocks = "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]
    return f"{blocks}{'░' * (width - len(blocks))} {ratio:.2f}×"


def version_label(version) -> str:
    return "no previous champion" if version is None else f"v{version}"


def audit_table(model_dir: Path, last: int = 20) -> dg.MetadataValue:
    """The newest alias moves (who, when, from -> to, why), for the UI."""
    rows = [
        {
            "at": a.at[:19],
            "from": version_label(a.previous),
            "to": version_label(a.to),
            "kind": a.kind,
            "by": a.actor,
            "trigger": a.trigger,
            "why": a.reason,
            "endpoint": a.endpoint,
        }
        for a in audit.read(model_dir)[-last:]
    ]
    return table(pd.DataFrame(rows[::-1]), max_rows=last, empty="no champion move yet")
