"""Loading the user's code named in a model's config (``module:function`` / class paths)."""

from __future__ import annotations

import importlib


class UserCodeError(ValueError):
    """The user's code named in the config cannot be loaded or used (the message names why)."""


def load_object(path: str):
    """``"package.module:attr"`` or ``"package.module.attr"`` -> the object."""
    module, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module or not attr:
        raise UserCodeError(f"{path!r}: expected 'package.module:name'")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise UserCodeError(f"{path!r}: module {module!r} cannot be imported ({e})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UserCodeError(f"{path!r}: {module!r} has no {attr!r}") from None
    return obj
