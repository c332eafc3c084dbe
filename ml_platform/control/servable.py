"""Which versions may serve: the gate's verdicts recorded on a version, read against the model's check list."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ml_platform.core import approval
from ml_platform.names import (
    GATE_JUDGED_AGAINST,
    LIVE_CHECK,
    VERSION_CHECK_ONLY,
    VERSION_PROMOTED,
    gate_checks,
    gate_failures,
    gate_passed,
)
from ml_platform.settings import Settings

if TYPE_CHECKING:  # `status` imports this module: no Dagster at import time
    from ml_platform.resources.registry import MlflowRegistry


# -------------------------------------------------------------------------- gate
def checks_of(settings: Settings, model: str) -> tuple[str, ...]:
    """The model's blocking gate checks (the registry in ``names``)."""
    return gate_checks(settings.models[model])


def served_before(tags: dict, checks: tuple[str, ...]) -> tuple[str, ...]:
    """The checks a version that already served must show to serve again: a rollback target was
    judged live when it was new (or before its model was staged), so not ``live_shadow`` again."""
    return tuple(c for c in checks if c != LIVE_CHECK) if tags.get(VERSION_PROMOTED) else checks


def servable(tags: dict, checks: tuple[str, ...]) -> bool | None:
    """The gate's reading of a version (True/False/None while pending), False for a version
    trained by `ml-platform check`: it never serves."""
    return False if tags.get(VERSION_CHECK_ONLY) == "true" else gate_passed(tags, served_before(tags, checks))


def gate_refusal(
    registry: MlflowRegistry, model: str, version: int, *, serving: int | None, kind: str, checks: tuple[str, ...]
) -> str | None:
    """Why ``version`` may not become champion, or None. Every blocking check in ``checks`` must have
    recorded "passed" on the version; a deploy must also have been compared with the
    champion that serves now (a rollback target was judged when it was new)."""
    try:
        mv = registry.version(model, version)
    except Exception:  # noqa: BLE001 - MLflow raises its own exception for an unknown version
        return f"{model} v{version} is not a registered version"
    tags = mv.tags
    if tags.get(VERSION_CHECK_ONLY) == "true":
        return f"{model} v{version} was trained by `ml-platform check` (an evaluation): it never serves"
    rejected = approval.rejection(tags)
    if rejected:
        return f"{model} v{version} was {rejected}"
    bad = gate_failures(tags, checks if kind == "deploy" else served_before(tags, checks))
    if bad:
        return f"{model} v{version} did not pass the gate: " + "; ".join(bad)
    if kind == "deploy":
        judged = tags.get(GATE_JUDGED_AGAINST, "none")
        now = "none" if serving is None else str(serving)
        if judged != now:
            return (
                f"{model} v{version} was judged against champion {version_label(judged)}, "
                f"but {version_label(now)} serves now: "
                "materialize candidate_model's checks again before deploying it"
            )
    return None


def version_label(x) -> str:
    return "none" if x in (None, "none") else f"v{x}"
