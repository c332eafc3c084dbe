"""The batch schema (pandera), built from the model config, and row quarantine.

A column-level problem (a configured column is missing) fails the whole batch; a
row-level problem (garbage in a cell, out of range, unknown category, missing label, a label
that is not one of the target's classes) quarantines that row with a reason, and the valid
rows go on. A batch whose labels are mostly not the target's classes (another vocabulary:
yes/no for a 0/1 target) fails as a whole, naming them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from ml_platform.core.frames import category_column, numeric_column
from ml_platform.core.values import binary_label, category
from ml_platform.names import COL_REASON, COL_ROW
from ml_platform.settings import ModelConfig


class BatchSchemaError(ValueError):
    """The batch as a whole does not fit the schema (e.g. a configured column is missing)."""


@dataclass
class ValidationOutcome:
    valid: pd.DataFrame
    quarantined: pd.DataFrame  # the original rows plus `_row` (1-based data row) and `_reason`
    labelled: bool = True  # False: the file has no target column (live / scoring data)
    flags: list[str] = field(default_factory=list)  # e.g. "single class '0' in target churned"
    single_class: str | None = None  # classification: the only class of the valid rows, if only one

    @property
    def invalid_share(self) -> float:
        total = len(self.valid) + len(self.quarantined)
        return len(self.quarantined) / total if total else 0.0


def required_columns(cfg: ModelConfig, labelled: bool = True) -> list[str]:
    cols = list(cfg.features) + ([cfg.target] if labelled else [])
    return cols + [c for c in (cfg.id_column, cfg.timestamp_column) if c]


def build_schema(cfg: ModelConfig, labelled: bool = True) -> pa.DataFrameSchema:
    columns = {}
    for col, spec in cfg.features.items():
        if spec.type == "numeric":
            checks = []
            if spec.min is not None:
                checks.append(pa.Check.ge(spec.min))
            if spec.max is not None:
                checks.append(pa.Check.le(spec.max))
            columns[col] = pa.Column(float, checks=checks, nullable=spec.nullable)
        else:
            checks = [pa.Check.isin([category(v) for v in spec.values])] if spec.values else []
            columns[col] = pa.Column(str, checks=checks, nullable=spec.nullable)
    if labelled:
        columns[cfg.target] = pa.Column(float if cfg.task == "regression" else str, nullable=False)
    if cfg.id_column:
        columns[cfg.id_column] = pa.Column(nullable=False)
    if cfg.timestamp_column:
        columns[cfg.timestamp_column] = pa.Column(nullable=False)
    # Extra columns are kept (ids, notes) but never reach the model.
    return pa.DataFrameSchema(columns, strict=False, coerce=False)


def _show(v) -> str:
    """A cell value for a quarantine reason, cut short (reasons are shown in the UI and status)."""
    if isinstance(v, (np.ndarray, np.generic)):
        v = v.tolist()  # plain Python: 1e+39, not np.float64(1e+39)
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _normalise(df: pd.DataFrame, cfg: ModelConfig, labelled: bool) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """Typed copy of the batch plus per-row reasons for cells that cannot be typed.

    Typing is ``core/frames.py``'s (the rule the endpoint applies to JSON too): numbers must
    fit a float32 (booleans, timestamps and lists are not numbers); categorical cells (and
    class labels) become category strings, so that codes 3 / 3.0 / "3" agree and booleans
    are "true" / "false". One bad cell costs one row, not the column's other checks."""
    out = df.copy()
    reasons: dict[int, list[str]] = {}

    def record(col: str, problems: dict) -> None:
        for why, positions in problems.items():
            for i in positions.tolist():
                reasons.setdefault(i, []).append(f"{col}: {why} (got {_show(df.at[i, col])})")

    for col in cfg.numeric_features:
        values, problems = numeric_column(df[col])
        out[col] = values
        record(col, problems)
    if labelled and cfg.task == "regression":
        values, problems = numeric_column(df[cfg.target], float32=False)
        out[cfg.target] = values
        record(cfg.target, problems)
    if cfg.timestamp_column:
        col = cfg.timestamp_column
        ts = pd.to_datetime(df[col], errors="coerce", utc=True, format="mixed")
        bad = ts.isna() & df[col].notna()
        record(col, {"not a timestamp": np.flatnonzero(bad.to_numpy())} if bad.any() else {})
        out[col] = ts
    cats = cfg.categorical_features + ([cfg.target] if labelled and cfg.task == "classification" else [])
    for col in cats:
        values, problems = category_column(df[col])
        out[col] = pd.Series(values, index=df.index, dtype=object)
        record(col, problems)
    return out, reasons


def _duplicated_columns(df: pd.DataFrame, cfg: ModelConfig, keys: str, source: str, labelled: bool) -> None:
    """A configured column that appears more than once in the file is ambiguous: fail the batch.
    (pandas renames the second ``age`` to ``age.1``; ``landing.read_batch`` records the
    repeats in ``df.attrs["duplicate_columns"]``.)"""
    repeats = df.attrs.get("duplicate_columns") or {}
    cols = required_columns(cfg, labelled)
    dup = [c for c in cols if repeats.get(c, 1) > 1]
    if dup:
        where = ", ".join(f"{c!r} ({_config_key(cfg, keys, c)}) appears {repeats[c]} times" for c in dup)
        raise BatchSchemaError(f"{source}: duplicate column name(s): {where}; a configured column must appear once")


def _spaced_hint(columns, missing: list) -> str:
    """A missing column the file has with spaces around its name (a header like "credit score ")."""
    spaced = {c.strip(): c for c in columns if isinstance(c, str) and c != c.strip()}
    found = [f"{spaced[m]!r}" for m in missing if m in spaced]
    return f" (it has {', '.join(found)}: spaces around the name)" if found else ""


def _config_key(cfg: ModelConfig, keys: str, col: str) -> str:
    if col in cfg.features:
        return f"{keys}.features.{col}"
    for key in ("target", "id_column", "timestamp_column"):
        if getattr(cfg, key) == col:
            return f"{keys}.{key}"
    return col


def class_set(classes) -> set[str] | None:
    """The categories of a classification target's classes (``target_values`` or a model's
    ``classes``), by the category rule every label is typed with (1, 1.0 and "1" are one)."""
    if classes is None:
        return None
    out = set()
    for c in classes:
        try:
            cat = category(c)
        except ValueError:
            continue
        if cat is not None:
            out.add(cat)
    return out or None


def unknown_labels(labels: pd.Series, classes) -> pd.Series:
    """Per row: is the label (a category string, None = missing) outside ``classes``?"""
    known = class_set(classes)
    if known is None:
        return pd.Series(False, index=labels.index)
    return labels.notna() & ~labels.isin(known)


def _shown_classes(known: set[str]) -> str:
    return ", ".join(sorted(known, key=lambda c: (len(c), c)))


def _check_labels(
    df: pd.DataFrame,
    norm: pd.DataFrame,
    cfg: ModelConfig,
    classes,
    reasons: dict[int, list[str]],
    keys: str,
    source: str,
) -> None:
    """Quarantine rows whose label is not a class; fail the batch when most labels are not."""
    col = cfg.target
    unknown = unknown_labels(norm[col], classes)
    if not unknown.any():
        return
    known = class_set(classes)
    key = f"{keys}.target"
    labelled = int(norm[col].notna().sum())
    if unknown.sum() * 2 > labelled:
        counts = norm.loc[unknown, col].value_counts()
        got = ", ".join(f"{_show(v)} ({n} rows)" for v, n in counts.head(5).items())
        more = f" and {len(counts) - 5} other value(s)" if len(counts) > 5 else ""
        raise BatchSchemaError(
            f"{source}: {unknown.sum()} of {labelled} labels in {col!r} ({key}) are not its classes "
            f"{_shown_classes(known)}: {got}{more}; map them to the classes, or declare the classes "
            f"with {keys}.target_values"
        )
    why = f"not a class of {key} ({_shown_classes(known)})"
    for i in np.flatnonzero(unknown.to_numpy()).tolist():
        reasons.setdefault(i, []).append(f"{col}: {why} (got {_show(df.at[i, col])})")


def validate_batch(
    df: pd.DataFrame,
    cfg: ModelConfig,
    *,
    model_name: str = "model",
    keys: str | None = None,
    source: str = "batch",
    classes: list | None = None,
) -> ValidationOutcome:
    """Validate one batch against the model's schema. ``classes`` (classification): the target's
    classes (``target_values``, else the champion's); a label outside them is a bad row. ``keys``:
    where the model's keys are written, for the messages (``Settings.keys_of``; else
    ``models.<model_name>``)."""
    # A file without the target column is unlabelled data (monitoring and scoring only);
    # a target column with some empty cells is labelled data with bad rows.
    labelled = cfg.target in df.columns
    keys = keys or f"models.{model_name}"
    if cfg.target not in df.columns and (hint := _spaced_hint(df.columns, [cfg.target])):
        # else the batch would be read as unlabelled and its labels silently unused
        raise BatchSchemaError(f"{source}: no column {cfg.target!r} ({keys}.target){hint}")
    _duplicated_columns(df, cfg, keys, source, labelled)
    needed = required_columns(cfg, labelled)
    missing = [c for c in needed if c not in df.columns]
    if missing:
        # Name the configured columns, never the file's own header: a file that is not a
        # batch at all (a secrets file, /etc/passwd) has its first line there.
        raise BatchSchemaError(
            f"{source}: missing column(s) {', '.join(repr(c) for c in missing)} required by "
            f"{', '.join(_config_key(cfg, keys, c) for c in missing)}; the file has "
            f"{len(df.columns)} column(s), {len(needed) - len(missing)} of the {len(needed)} configured"
            + _spaced_hint(df.columns, missing)
        )
    df = df.reset_index(drop=True)
    norm, reasons = _normalise(df, cfg, labelled)
    if labelled and cfg.task == "classification":
        if class_set(cfg.target_values or classes) == {"0", "1"}:  # yes/no, true/false -> 1/0
            norm[cfg.target] = pd.Series([binary_label(c) for c in norm[cfg.target]], index=norm.index, dtype=object)
        _check_labels(df, norm, cfg, cfg.target_values or classes, reasons, keys, source)
    schema = build_schema(cfg, labelled)
    try:
        schema.validate(norm, lazy=True)
    except SchemaErrors as err:
        for rec in err.failure_cases.itertuples(index=False):
            if rec.index is None or pd.isna(rec.index):
                raise BatchSchemaError(f"{source}: column {rec.column!r}: {rec.check}") from None
            i = int(rec.index)
            if any(r.startswith(f"{rec.column}: ") for r in reasons.get(i, [])):
                continue  # already reported as an untypeable cell
            got = df.at[i, rec.column] if rec.column in df.columns else rec.failure_case
            shown = "" if _isna(got) else f" (got {_show(got)})"
            reasons.setdefault(i, []).append(f"{rec.column}: {_describe(rec.check)}{shown}")
    bad = sorted(reasons)
    valid = schema.validate(norm.drop(index=bad)) if bad else norm
    quarantined = df.loc[bad].copy()
    quarantined.insert(0, COL_ROW, [i + 1 for i in bad])
    quarantined[COL_REASON] = ["; ".join(reasons[i]) for i in bad]
    outcome = ValidationOutcome(
        valid=valid.reset_index(drop=True), quarantined=quarantined.reset_index(drop=True), labelled=labelled
    )
    if labelled and cfg.task == "classification" and len(outcome.valid):
        # Facts that make later verdicts moot: with one class no ROC AUC / F1 can be computed.
        classes = outcome.valid[cfg.target].dropna().unique()
        if len(classes) == 1:
            outcome.single_class = str(classes[0])
            outcome.flags.append(f"single class {outcome.single_class!r} in target {cfg.target}")
    return outcome


def _isna(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):  # lists, arrays
        return False


def _describe(check: str) -> str:
    check = str(check)
    if check.startswith("coerce_dtype"):
        return "not a " + ("timestamp" if "datetime" in check else "number")
    if check == "not_nullable":
        return "missing value"
    if check.startswith("isin("):
        return "not an allowed value " + check[len("isin") :]
    return check.replace("greater_than_or_equal_to", ">=").replace("less_than_or_equal_to", "<=")
