"""The configuration reference (docs/configuration.md), generated from the settings models.

Every key of ``ml_platform.yaml`` is a field of a model in :mod:`ml_platform.settings`; its
type, choices, constraints, default and description are read from the field itself, so the
reference cannot drift from the code (one source for every default). Regenerate it with

    python -m ml_platform.config_reference --write     # or: make docs

``ml_platform_tests/unit/test_config_reference.py`` fails when the page and :func:`render`
differ, and when a field has no description.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ml_platform.settings import ModelConfig, Settings

DOC_PATH = Path("docs") / "configuration.md"
COMMAND = "python -m ml_platform.config_reference --write"

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "mapping", Any: "any"}

_HEADER = """\
<!-- Generated from the field descriptions in ml_platform/settings/ by
     `{command}` (or `make docs`). Do not edit by hand:
     edit the descriptions, then regenerate. -->

# Configuration reference (`ml_platform.yaml`)

The platform reads one YAML file: `--config PATH`, else `$ML_PLATFORM_CONFIG`, else
`./ml_platform.yaml`. Relative paths in it are relative to the file. Only `models`, and in each
model `landing_dir`, `target`, `task` and `features`, are required; every other key has the
default listed below. A model with three features:

```yaml
storage_dir: .ml_platform            # all platform state; relative to this file
serving: {{host: 127.0.0.1, port: 8080}}
models:
  churn:                             # one asset chain + one endpoint route per model
    landing_dir: data/landing/churn  # CSV or Parquet batch files appear here
    target: churned
    task: classification             # or regression
    id_column: customer_id           # optional; accepted (and ignored) by the endpoint
    timestamp_column: event_time     # optional; time-ordered holdout when given
    features:
      tenure_months: {{type: numeric, min: 0, max: 600}}   # optional min / max / nullable
      region: {{type: categorical}}    # strings or integer codes (3, 3.0, "3" are one category)
      contract: {{type: categorical, values: [monthly, annual, two_year]}}  # optional allowed values
```

A configuration error fails at load (exit 2) with the file, the key path and what was expected,
e.g. `ml_platform.yaml: invalid configuration: models.churn.features.age.type: expected
'numeric', 'categorical' or 'boolean' (got 'int')`. Unknown keys, `.nan` and `.inf` are errors
too. A configured column that a batch lacks fails that batch with the key it belongs to
(`models.churn.features.contract`). A `landing_dir` that does not exist yet, or two models
sharing one, is a warning on stderr, not an error.

How to read the tables: *type* gives the choices of a key that takes one of a few values, and
its bounds in interval notation (`[0, 1)`: at least 0, below 1); *default* is what applies when
the key is absent ("not set": off, or derived as the description says).
"""


@dataclass(frozen=True)
class Entry:
    """One key of the configuration: its dotted path and the pydantic field behind it."""

    path: str
    field: FieldInfo
    model: type[BaseModel] | None  # the section model, when the key is a section (or a list / map of them)
    container: str  # "" | "optional" | "list" | "map"


def _strip_optional(tp) -> tuple[Any, bool]:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) < len(get_args(tp)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True
    return tp, False


def _is_model(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _section(tp) -> tuple[type[BaseModel] | None, str]:
    """The settings model a field holds (directly, optionally, as a list or as a name -> model
    map), and how; (None, "") for a plain value."""
    inner, optional = _strip_optional(tp)
    if _is_model(inner):
        return inner, "optional" if optional else ""
    args = get_args(inner)
    if get_origin(inner) is list and args and _is_model(args[0]):
        return args[0], "list"
    if get_origin(inner) is dict and len(args) == 2 and _is_model(args[1]):
        return args[1], "map"
    return None, ""


_DOC_LINK = re.compile(r"docs/([\w-]+\.md)")
_PLACEHOLDER = {"models": "<name>", "features": "<column>"}


def _child_prefix(path: str, key: str, container: str) -> str:
    if container == "map":
        return f"{path}.{_PLACEHOLDER.get(key, '<key>')}"
    if container == "list":
        return f"{path}[]"
    return path


def walk(model: type[BaseModel] = Settings, prefix: str = "") -> Iterator[Entry]:
    """Every key below ``model``, depth first, sections after the plain keys of their parent."""
    later = []
    for key, field in model.model_fields.items():
        path = f"{prefix}.{key}" if prefix else key
        sub, container = _section(field.annotation)
        entry = Entry(path, field, sub, container)
        if sub is None:
            yield entry
        else:
            later.append(entry)
    for entry in later:
        yield entry
        yield from walk(entry.model, _child_prefix(entry.path, entry.path.rsplit(".", 1)[-1], entry.container))


def _type_text(tp) -> str:
    inner, optional = _strip_optional(tp)
    text = _type_name(inner)
    return f"{text} or `null`" if optional else text


def _type_name(tp) -> str:
    if tp in _SCALARS:
        return _SCALARS[tp]
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        shown = [f"`{a}`" for a in args]
        return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        if not args:
            return "list"
        item = _type_name(args[0])
        return f"list of ({item})" if " or " in item else f"list of {item}"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _number(x) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return repr(x)


def _bounds(field: FieldInfo) -> str:
    lo = hi = None
    lo_open = hi_open = False
    parts = []
    for m in field.metadata:
        if isinstance(m, at.Ge):
            lo = m.ge
        elif isinstance(m, at.Gt):
            lo, lo_open = m.gt, True
        elif isinstance(m, at.Le):
            hi = m.le
        elif isinstance(m, at.Lt):
            hi, hi_open = m.lt, True
        elif isinstance(m, at.MinLen):
            parts.append(f"at least {m.min_length} item{'s' if m.min_length != 1 else ''}")
        elif isinstance(m, at.MaxLen):
            parts.append(f"at most {m.max_length} items")
    if lo is not None and hi is not None:
        parts.insert(0, f"{'(' if lo_open else '['}{_number(lo)}, {_number(hi)}{')' if hi_open else ']'}")
    elif lo is not None:
        parts.insert(0, f"{'>' if lo_open else '≥'} {_number(lo)}")
    elif hi is not None:
        parts.insert(0, f"{'<' if hi_open else '≤'} {_number(hi)}")
    return ", ".join(parts)


def _yaml_value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return _number(v)
    if isinstance(v, BaseModel):
        return json.dumps(v.model_dump(mode="json"))
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "not set"
    if isinstance(value, BaseModel):
        return "its defaults"
    if isinstance(value, (list, dict)) and not value:
        return "empty"
    return f"`{_yaml_value(value)}`"


def _cell(text: str) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return _DOC_LINK.sub(lambda m: f"[{m.group(0)}]({m.group(1)})", text)


def _row(entry: Entry) -> str:
    f = entry.field
    typ = _type_text(f.annotation)
    bounds = _bounds(f)
    if bounds:
        typ = f"{typ}, {bounds}"
    return f"| `{entry.path}` | {_cell(typ)} | {_cell(default_text(f))} | {_cell(f.description or '')} |"


def _section_heading(entry: Entry) -> list[str]:
    f = entry.field
    child = _child_prefix(entry.path, entry.path.rsplit(".", 1)[-1], entry.container)
    if entry.container == "map":
        required = "required" if f.is_required() else f"default: {default_text(f)}"
        facts = [f"one entry per `{child.rsplit('.', 1)[-1]}`", required]
    elif entry.container == "list":
        facts = ["a list of entries", f"default: {default_text(f)}"]
    elif entry.container == "optional":
        facts = ["optional section", "not set by default"]
    else:
        facts = ["section"]
    bounds = _bounds(f)
    if bounds:
        facts.append(bounds)
    text = "; ".join(facts)
    return [f"### `{child}`", "", f"*{text[0].upper() + text[1:]}.* {_cell(f.description or '')}", ""]


def _tables(entries: list[Entry]) -> list[str]:
    out: list[str] = []
    table: list[str] = []

    def flush():
        if table:
            out.extend(["| key | type | default | meaning |", "|---|---|---|---|", *table, ""])
            table.clear()

    for entry in entries:
        if entry.model is None:
            table.append(_row(entry))
        else:
            flush()
            out.extend(_section_heading(entry))
    flush()
    return out


def render() -> str:
    """The whole reference page, as Markdown."""
    top = [e for e in walk(Settings) if not e.path.startswith("models")]
    per_model = [e for e in walk(Settings) if e.path.startswith("models")]
    lines = [_HEADER.format(command=COMMAND), "## Platform keys (top level)", ""]
    lines += _tables(top)
    lines += ["## Model keys (`models.<name>`)", ""]
    lines += _tables(per_model)
    return "\n".join(lines).rstrip("\n") + "\n"


def missing_descriptions() -> list[str]:
    """Key paths of every field (of ``Settings`` and ``ModelConfig``) without a description."""
    seen = [e.path for e in walk(Settings) if not (e.field.description or "").strip()]
    seen += [f"models.<name>.{e.path}" for e in walk(ModelConfig) if not (e.field.description or "").strip()]
    return sorted(set(seen))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m ml_platform.config_reference",
        description="Print the configuration reference (Markdown), or write it to docs/configuration.md.",
    )
    ap.add_argument("--write", action="store_true", help=f"write {DOC_PATH} (relative to the current directory)")
    args = ap.parse_args(argv)
    text = render()
    if args.write:
        DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
        DOC_PATH.write_text(text)
        print(f"wrote {DOC_PATH}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
