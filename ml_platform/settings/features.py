"""One feature column: its type and what a valid value is."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from ml_platform.settings.base import StrictModel

# Validators may name a key below the one they are attached to: a message "@sub.key: text"
# is reported at "<path>.sub.key: text" (see format_errors).


class FeatureSpec(StrictModel):
    type: Literal["numeric", "categorical", "boolean"] = Field(
        description="`boolean` is a categorical feature with the values `false` and `true` (what booleans "
        "become in batches and requests, core/values.py); it is stored as such, so every layer sees a categorical."
    )
    min: Optional[float] = Field(
        None, description="Numeric features: the smallest valid value; rows below it are quarantined."
    )
    max: Optional[float] = Field(
        None, description="Numeric features: the largest valid value; rows above it are quarantined."
    )
    nullable: bool = Field(True, description="`false`: rows with a missing value are quarantined.")
    values: Optional[list[Union[str, int]]] = Field(
        None,
        description="Categorical features: the allowed categories (strings or integer codes; `3`, `3.0` and "
        '`"3"` are one category); rows with another value are quarantined. Not set: any value.',
    )

    @model_validator(mode="before")
    @classmethod
    def _boolean(cls, data):
        if isinstance(data, dict) and data.get("type") == "boolean":
            if data.get("values") is not None:
                raise ValueError("@values: a boolean feature takes no values (they are false and true)")
            data = {**data, "type": "categorical", "values": ["false", "true"]}
        return data

    @field_validator("values", mode="before")
    @classmethod
    def _bool_values(cls, v):
        # YAML true / false -> the categories "true" / "false" (pydantic would make them 1 / 0)
        if isinstance(v, list):
            return [("true" if x else "false") if isinstance(x, bool) else x for x in v]
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.type == "categorical" and (self.min is not None or self.max is not None):
            raise ValueError("min/max apply to numeric features only")
        if self.type == "numeric" and self.values is not None:
            raise ValueError("values applies to categorical features only")
        if self.values is not None and not self.values:
            raise ValueError(
                "@values: an empty list allows no category at all: list them, or leave values out (any value)"
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self
