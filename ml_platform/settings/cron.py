"""Cron expressions for scheduled retraining, checked at load."""

from __future__ import annotations

import re
from typing import Optional

# ---- cron (retrain.schedule), checked without importing dagster (the endpoint loads this
# module). Accepts what Dagster's schedules accept: 5 fields, numbers, names, ranges (also
# wrapping ones), lists, steps, ? and L in day-of-month, day#n in day-of-week, and @aliases.
_CRON_ALIASES = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_CRON_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}),
    ("day of week", 0, 7, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}),
)
_CRON_ITEM = re.compile(r"(?:(\*)|([a-z0-9]+)(?:-([a-z0-9]+))?)(?:/(\d+))?")
_CRON_NTH = re.compile(r"(?:[0-7]|sun|mon|tue|wed|thu|fri|sat)#[1-5]")


def cron_problem(expr: str) -> Optional[str]:
    """What is wrong with a cron string, or None when Dagster can schedule it."""
    text = " ".join(str(expr).split()).lower()
    if text in _CRON_ALIASES:
        return None
    parts = text.split(" ") if text else []
    if len(parts) != 5:
        return (
            "expected a cron string of 5 fields (minute hour day-of-month month day-of-week, "
            f"e.g. '0 3 * * 1') or an alias such as @daily, got {len(parts)} field(s)"
        )
    days = None
    for k, (part, (name, lo, hi, names)) in enumerate(zip(parts, _CRON_FIELDS)):
        vals: set[int] = set()
        for item in part.split(","):
            if (item == "?" and k in (2, 4)) or (item == "l" and k == 2) or (k == 4 and _CRON_NTH.fullmatch(item)):
                continue
            m = _CRON_ITEM.fullmatch(item)
            if not m:
                return f"{name} field {item!r} is not a number, a range, a list or a step"
            star, a, b, step = m.groups()
            if step is not None and int(step) < 1:
                return f"{name} field {item!r}: the step must be at least 1"
            try:
                first = lo if star else cron_value(a, names)
                last = hi if star else (cron_value(b, names) if b is not None else (hi if step else first))
            except ValueError:
                return f"{name} field {item!r} is not a number or a name"
            if not (lo <= first <= hi and lo <= last <= hi):
                return f"{name} field {item!r} is outside {lo}-{hi}"
            if first <= last:
                vals.update(range(first, last + 1, int(step or 1)))
            else:  # wraps around, as croniter reads it
                vals.update(range(first, hi + 1), range(lo, last + 1))
        if k == 2:
            days = vals
        if k == 3 and vals == {2} and days is not None and len(days) == 1 and days <= {30, 31}:
            return f"day {next(iter(days))} of February never comes"
    return None


def cron_value(token: str, names: dict) -> int:
    if token in names:
        return names[token]
    if not token.isdigit():
        raise ValueError(token)
    return int(token)
