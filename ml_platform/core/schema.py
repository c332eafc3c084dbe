"""The batch schema (pandera), built from the model config, and row quarantine.

A column-level problem (a configured column is missing) fails the whole batch; a
row-level problem (garbage in a cell, out of range, unknown category, missing label)
quarantines that row with a reason, and the valid rows go on.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from ml_platform.core.frames import category_strings
from ml_platform.settings import ModelConfig


class BatchSchemaError(ValueError):
    """The batch as a whole does not fit the schema (e.g. a configured column is missing)."""


@dataclass
class ValidationOutcome:
    valid: pd.DataFrame
    quarantined: pd.DataFrame  # the original rows plus `_row` (1-based data row) and `_reason`
    labelled: bool = True      # False: the file has no target column (live / scoring data)

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
            checks = [pa.Check.isin([str(v) for v in spec.values])] if spec.values else []
            columns[col] = pa.Column(str, checks=checks, nullable=spec.nullable)
    if labelled:
        columns[cfg.target] = pa.Column(float if cfg.task == "regression" else str, nullable=False)
    if cfg.id_column:
        columns[cfg.id_column] = pa.Column(nullable=False)
    if cfg.timestamp_column:
        columns[cfg.timestamp_column] = pa.Column(nullable=False)
    # Extra columns are kept (ids, notes) but never reach the model.
    return pa.DataFrameSchema(columns, strict=False, coerce=False)


def _normalise(df: pd.DataFrame, cfg: ModelConfig, labelled: bool) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """Typed copy of the batch plus per-row reasons for cells that cannot be typed.

    Coercion is done here rather than by pandera so that one bad cell costs one row,
    not the column's other checks. Categorical cells (and class labels) become strings
    so that codes 3 / 3.0 / "3" agree."""
    out = df.copy()
    reasons: dict[int, list[str]] = {}

    def coerce(col: str, values: pd.Series, what: str) -> None:
        bad = values.isna() & df[col].notna()
        for i in bad[bad].index:
            reasons.setdefault(int(i), []).append(f"{col}: not a {what} (got {df.at[i, col]!r})")
        out[col] = values

    for col in cfg.numeric_features:
        coerce(col, pd.to_numeric(df[col], errors="coerce").astype(float), "number")
    if labelled and cfg.task == "regression":
        coerce(cfg.target, pd.to_numeric(df[cfg.target], errors="coerce").astype(float), "number")
    if cfg.timestamp_column:
        col = cfg.timestamp_column
        coerce(col, pd.to_datetime(df[col], errors="coerce", utc=True, format="mixed"), "timestamp")
    cats = cfg.categorical_features + ([cfg.target] if labelled and cfg.task == "classification" else [])
    for col in cats:
        out[col] = category_strings(df[col]).where(df[col].notna(), None)
    return out, reasons


def validate_batch(df: pd.DataFrame, cfg: ModelConfig, *, model_name: str = "model",
                   source: str = "batch") -> ValidationOutcome:
    # A file without the target column is unlabelled data (monitoring and scoring only);
    # a target column with some empty cells is labelled data with bad rows.
    labelled = cfg.target in df.columns
    missing = [c for c in required_columns(cfg, labelled) if c not in df.columns]
    if missing:
        where = {c: f"models.{model_name}.features.{c}" if c in cfg.features else c for c in missing}
        raise BatchSchemaError(
            f"{source}: missing column(s) {', '.join(repr(c) for c in missing)} required by "
            f"{', '.join(where.values())}; the file has {list(df.columns)}")
    df = df.reset_index(drop=True)
    norm, reasons = _normalise(df, cfg, labelled)
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
            shown = "" if pd.isna(got) else f" (got {got!r})"
            reasons.setdefault(i, []).append(f"{rec.column}: {_describe(rec.check)}{shown}")
    bad = sorted(reasons)
    valid = schema.validate(norm.drop(index=bad)) if bad else norm
    quarantined = df.loc[bad].copy()
    quarantined.insert(0, "_row", [i + 1 for i in bad])
    quarantined["_reason"] = ["; ".join(reasons[i]) for i in bad]
    return ValidationOutcome(valid=valid.reset_index(drop=True), quarantined=quarantined.reset_index(drop=True),
                             labelled=labelled)


def _describe(check: str) -> str:
    check = str(check)
    if check.startswith("coerce_dtype"):
        return "not a " + ("timestamp" if "datetime" in check else "number")
    if check == "not_nullable":
        return "missing value"
    if check.startswith("isin("):
        return "not an allowed value " + check[len("isin"):]
    return check.replace("greater_than_or_equal_to", ">=").replace("less_than_or_equal_to", "<=")
