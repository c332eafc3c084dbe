"""dg projects: models declared as ModelComponent defs.yaml files in the project's defs folder."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, field_validator

from ml_platform.settings.base import MODEL_NAME, ConfigError, format_errors, unreadable
from ml_platform.settings.model import ModelConfig

# ---------------------------------------------------------------- dg projects (ModelComponent)
COMPONENT_TYPE = "ml_platform.ModelComponent"
_SKIPPED_DIRS = {"node_modules", "__pycache__", "site-packages", "build", "dist", "data"}


class ComponentAttributes(ModelConfig):
    """A ModelComponent's ``attributes``: the keys of ``models.<name>`` plus the model's name."""

    name: str = Field(description="The model's name: its Dagster asset key prefix and endpoint route.")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not MODEL_NAME.fullmatch(name):
            raise ValueError("expected 1-64 ASCII letters, digits and '_', starting with a letter")
        return name

    def model_config_only(self) -> ModelConfig:
        """The model's config without its name (what ``models.<name>`` holds)."""
        return ModelConfig.model_validate(self.model_dump(exclude={"name"}, exclude_unset=True))


def is_dg_project(directory: Path) -> bool:
    """A `dg` project: its pyproject.toml has a ``[tool.dg]`` table."""
    try:
        return "[tool.dg" in (directory / "pyproject.toml").read_text()
    except OSError:
        return False


def defs_folder(project: Path) -> Path:
    """The project's defs folder, as `dg` finds it: ``[tool.dg.project] defs_module`` (default
    ``<root_module>.defs``), under ``src/`` when the project has one."""
    try:
        dg = tomllib.loads((project / "pyproject.toml").read_text()).get("tool", {}).get("dg", {}).get("project", {})
    except (OSError, ValueError):
        dg = {}
    module = dg.get("defs_module") or f"{dg.get('root_module', '')}.defs"
    rel = Path(*module.split("."))
    return project / "src" / rel if (project / "src" / rel).is_dir() else project / rel


def component_files(project: Path) -> list[Path]:
    """The ``defs.yaml`` files of the project's defs folder (hidden and data folders skipped)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(defs_folder(project)):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIPPED_DIRS)
        if "defs.yaml" in filenames:
            out.append(Path(dirpath, "defs.yaml"))
    return out


def component_models(project: Path) -> dict[str, tuple[ModelConfig, Path]]:
    """name -> (config, defs.yaml) of every ModelComponent in a `dg` project. A bad attribute is a
    ConfigError naming the file and the key path, like a bad key in ml_platform.yaml."""
    out: dict[str, tuple[ModelConfig, Path]] = {}
    for f in component_files(project):
        try:
            docs = [d for d in yaml.safe_load_all(f.read_text()) if isinstance(d, dict)]
        except yaml.YAMLError as e:
            raise ConfigError(f"{f}: not valid YAML: {e}") from None
        except (OSError, UnicodeError) as e:
            raise unreadable(f, e) from None
        for doc in docs:
            if doc.get("type") != COMPONENT_TYPE:
                continue
            try:
                attrs = ComponentAttributes.model_validate(doc.get("attributes") or {})
            except ValidationError as e:
                raise ConfigError(f"{f}: invalid attributes: {format_errors(e)}") from None
            if attrs.name in out:
                raise ConfigError(f"{f}: model {attrs.name!r} is also defined in {out[attrs.name][1]}")
            out[attrs.name] = (attrs.model_config_only(), f)
    return out


def _with_components(src: Path, models: object, components: dict[str, tuple[ModelConfig, Path]]) -> object:
    if models is not None and not isinstance(models, dict):
        return models  # Settings reports the type error
    models = dict(models or {})
    for name, (cfg, f) in components.items():
        if name in models:
            raise ConfigError(f"{f}: model {name!r} is also configured under models: in {src}")
        models[name] = cfg
    if not models:
        raise ConfigError(
            f"{src.parent}: a dg project with no model: add a defs.yaml with `type: {COMPONENT_TYPE}` "
            f"(`dg scaffold defs {COMPONENT_TYPE} <name>`) or models: to {src.name}"
        )
    return models
