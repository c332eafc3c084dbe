"""Finding and loading the config (a file or a dg project) and checking its paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import yaml
from pydantic import ValidationError

from ml_platform.settings.base import CONFIG_ENV, DEFAULT_CONFIG_NAME, ConfigError, format_errors, unreadable
from ml_platform.settings.platform import Settings
from ml_platform.settings.project import _with_components, component_models, is_dg_project


def config_path(path: str | os.PathLike | None = None) -> Path:
    """Where the config is: explicit path, then $ML_PLATFORM_CONFIG, then ./ml_platform.yaml."""
    if path is not None:
        return Path(path).resolve()
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).resolve()
    return (Path.cwd() / DEFAULT_CONFIG_NAME).resolve()


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """The settings of a config file, or of a `dg` project (a directory, or a config file in one).

    In a `dg` project (``[tool.dg]`` in its pyproject.toml) the models are its ``defs.yaml``
    files of ``type: ml_platform.ModelComponent``, and ``ml_platform.yaml`` at its root is
    optional: platform-wide settings only (storage_dir, serving, ui, scale_out)."""
    src = config_path(path)
    if src.is_dir():
        src = src / DEFAULT_CONFIG_NAME
    project = src.parent if is_dg_project(src.parent) else None
    try:
        raw = yaml.safe_load(src.read_text())
    except FileNotFoundError:
        if project is None:
            raise ConfigError(
                f"{src}: config file not found (set {CONFIG_ENV}, pass --project DIR, or run from the directory "
                f"holding {DEFAULT_CONFIG_NAME} or a dg project)"
            ) from None
        raw = {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{src}: not valid YAML: {e}") from None
    except (OSError, UnicodeError) as e:
        raise unreadable(src, e) from None
    if raw is None and project is not None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: expected a mapping at the top level")
    components = component_models(project) if project is not None else {}
    if project is not None:
        raw = {**raw, "models": _with_components(src, raw.get("models"), components)}
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{src}: invalid configuration: {format_errors(e)}") from None
    settings._base_dir = src.parent
    settings._source = src
    settings._project = project
    settings._component_files = {name: f for name, (_, f) in components.items()}
    problems, warnings = _check_paths(settings)
    if problems:
        body = problems[0] if len(problems) == 1 else "\n  " + "\n  ".join(problems)
        raise ConfigError(f"{src}: invalid configuration: {body}")
    settings._warnings = warnings
    return settings


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _dir_problem(path: Path, *, write: bool) -> Optional[str]:
    """Why ``path`` cannot be used as a directory (read, or also written), or None. A path
    that does not exist yet is fine when its nearest existing parent is a directory in which
    it can be created."""
    mode = os.R_OK | os.X_OK | (os.W_OK if write else 0)
    need = "a writable directory" if write else "a readable directory"
    if path.exists():
        if not path.is_dir():
            return f"expected {need}, but {path} is a file"
        if not os.access(path, mode):
            return f"expected {need}, but {path} is not {'writable' if write else 'readable'} (permission denied)"
        return None
    base = _nearest_existing(path)
    if not base.is_dir():
        return f"expected {need}, but {path} cannot be created: {base} is a file"
    if not os.access(base, os.W_OK | os.X_OK):
        return f"expected {need}, but {path} cannot be created: {base} is not writable (permission denied)"
    return None


def _check_paths(settings: Settings) -> tuple[list[str], list[str]]:
    """Filesystem checks at load: (errors, warnings), each '<key path>: <problem>'."""
    problems, warnings = [], []
    p = _dir_problem(settings.storage, write=True)
    if p:
        problems.append(f"storage_dir: {p}")
    pg = settings.scale_out.postgres
    if pg is not None and pg.password_env is not None and pg.password_env not in os.environ:
        problems.append(f"scale_out.postgres.password_env: environment variable {pg.password_env} is not set")
    if pg is not None and pg.password_file is not None:
        pw = settings.source.parent / pg.password_file
        if not pw.is_file() or not os.access(pw, os.R_OK):
            problems.append(f"scale_out.postgres.password_file: expected a readable file ({pw})")
    by_dir: dict[Path, list[str]] = {}
    for name in settings.models:
        landing = settings.landing_dir(name)
        if landing is None:  # batches come from an asset (source)
            continue
        key = f"models.{name}.landing_dir"
        p = _dir_problem(landing, write=False)
        if p:
            problems.append(f"{key}: {p}")
            continue
        if not landing.exists():
            # `ml-platform up` / `simulate` create it (a fresh clone has no data/landing yet)
            warnings.append(f"{key}: {landing} does not exist yet; nothing is ingested for {name} until it is created")
        by_dir.setdefault(landing, []).append(name)
    for landing, names in by_dir.items():
        if len(names) > 1:
            warnings.append(
                f"{' and '.join(f'models.{n}.landing_dir' for n in names)} are the same "
                f"directory ({landing}): every file there is ingested by each of these models"
            )
    return problems, warnings
