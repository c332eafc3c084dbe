"""A model's code version: one hash of everything that shapes its candidates, so a change to
training code, parameters or the gate is a reason to retrain, like new data.

The manifest names each part (platform version, estimator/pipeline spec and params, the user's
transform / pipeline / check functions by source, training and gate config, the input schema);
the code version is its hash. Comparing two manifests says what changed, for the retrain's reason.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ml_platform.settings import ModelConfig


def _platform_version() -> str:
    try:
        return version("ml_platform")
    except PackageNotFoundError:
        return "unknown"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def source_digest(path: str) -> str:
    """Hash of the source of the module holding ``module:function`` (the whole module: a helper
    the function calls counts too). An unimportable path hashes its name."""
    from ml_platform.core.user_code import UserCodeError, load_object

    try:
        obj = load_object(path)
        module = inspect.getmodule(obj)
        return _digest(inspect.getsource(module) if module is not None else inspect.getsource(obj))
    except (UserCodeError, OSError, TypeError):
        return _digest(path)


def user_code(cfg: ModelConfig) -> list[str]:
    """The ``module:function`` paths whose modules the manifest hashes by source."""
    return [p for p in (cfg.pipeline, getattr(cfg, "transform", None), *cfg.gate.checks) if p]


def source_file(path: str) -> str | None:
    """The file ``source_digest`` hashes for ``path``; None when it hashes the name."""
    from ml_platform.core.user_code import UserCodeError, load_object

    try:
        obj = load_object(path)
        return inspect.getsourcefile(inspect.getmodule(obj) or obj)
    except (UserCodeError, TypeError):
        return None


def manifest(cfg: ModelConfig) -> dict[str, str]:
    """part -> digest, for every part that shapes a candidate."""
    user_code = {"pipeline": cfg.pipeline, "transform": getattr(cfg, "transform", None)}
    parts = {
        "platform": _platform_version(),
        "estimator": _digest(
            json.dumps([e.model_dump(by_alias=True) for e in cfg.estimator_list], sort_keys=True, default=str)
        ),
        "training": _digest(cfg.training.model_dump_json()),
        "gate": _digest(cfg.gate.model_dump_json()),
        "schema": _digest(
            json.dumps(
                {
                    "target": cfg.target,
                    "task": cfg.task,
                    "features": {c: s.model_dump(exclude_none=True) for c, s in cfg.features.items()},
                },
                sort_keys=True,
                default=str,
            )
        ),
    }
    for key, path in user_code.items():
        if path:
            parts[key] = f"{path}@{source_digest(path)}"
    for path in cfg.gate.checks:
        parts[f"gate.checks.{path}"] = source_digest(path)
    return parts


def code_version(parts: dict[str, str]) -> str:
    return _digest(json.dumps(parts, sort_keys=True))


def changed(old: dict[str, str] | None, new: dict[str, str]) -> list[str]:
    """The parts that differ (added, removed or changed), in a stable order."""
    old = old or {}
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def git_state(directory: Path) -> tuple[str, bool | None]:
    """(HEAD commit, dirty?) of the git checkout holding ``directory``; ("unknown", None)
    outside one."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=directory
        ).stdout.strip()
        if not head:
            return "unknown", None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=directory,
        ).stdout
        return head, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
