"""The base of every settings model, the config error, and how validation errors are phrased."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, ValidationError

CONFIG_ENV = "ML_PLATFORM_CONFIG"
DEFAULT_CONFIG_NAME = "ml_platform.yaml"
MODEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


class ConfigError(ValueError):
    """A configuration problem, already phrased for the user (file + key path + expectation)."""


def unreadable(path: object, e: OSError | UnicodeError) -> ConfigError:
    """A file that cannot be read as text (permissions, not UTF-8), as one line naming it."""
    if isinstance(e, UnicodeDecodeError):
        return ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})")
    return ConfigError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})")


class StrictModel(BaseModel):
    # allow_inf_nan=False: `.nan` / `.inf` in YAML is a config error for every float key
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-after", "function-before")))
        msg = e["msg"].removeprefix("Value error, ")
        if msg.startswith("@") and ": " in msg:  # a validator naming a key below its own
            sub, msg = msg[1:].split(": ", 1)
            path = f"{path}.{sub}" if path else sub
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
            if path == "models":  # e.g. a dg project's platform-wide ml_platform.yaml given as --config
                msg += (
                    ": add a models: block, or use --project DIR for a dg project whose models are "
                    "ModelComponents (docs/extending.md)"
                )
        elif e["type"] == "literal_error":
            msg = msg.replace("Input should be", "expected")
        elif e["type"] == "finite_number":
            msg = "expected a finite number"
        secret = path.endswith("_url")  # a URL may carry credentials: never echo it
        if (
            e["type"] not in ("missing", "extra_forbidden")
            and "input" in e
            and not secret
            and not isinstance(e["input"], (dict, list))
        ):
            shown = repr(e["input"])
            msg += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
        lines.append(f"{path or '<top level>'}: {msg}")
    # one problem: one line; several: one per line
    return lines[0] if len(lines) == 1 else "\n  " + "\n  ".join(lines)
