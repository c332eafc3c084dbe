"""ml_platform: a Dagster-native ML platform.

Public entry points: ``ml_platform.ModelComponent`` (a Dagster Component for a `dg` project),
``ml_platform.build_definitions`` (Definitions to merge into a project's own) and
``ml_platform.load_settings``. They are imported on first use: `ml-platform serve` loads this
package and must not import Dagster."""

__all__ = ["GateVerdict", "ModelComponent", "ModelOutputs", "build_definitions", "load_settings"]


def __getattr__(name: str):
    if name == "ModelComponent":
        from ml_platform.defs.component import ModelComponent

        return ModelComponent
    if name == "build_definitions":
        from ml_platform.defs.definitions import build_definitions

        return build_definitions
    if name in ("GateVerdict", "ModelOutputs"):
        from ml_platform.core import gate

        return getattr(gate, name)
    if name == "load_settings":
        from ml_platform.settings import load_settings

        return load_settings
    raise AttributeError(f"module 'ml_platform' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
