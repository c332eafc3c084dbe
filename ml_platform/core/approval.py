"""Human approval (``deploy.approval: required``): which candidates wait for a person, and
the tags that record a person's decision on a model version. Pure: no Dagster, no MLflow.

A version awaits approval when every blocking gate check passed on it, it never served,
nobody rejected or approved it yet, and it is newer than the champion. Approving is a
champion move (``promotion.move_champion``, still gated); rejecting records the decision
(``operator_actions.reject``) and leaves the champion where it is.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import asdict, dataclass

from ml_platform.names import (
    GATE_JUDGED_AGAINST,
    LIVE_CHECK,
    VERSION_PROMOTED,
    VERSION_TRIGGER,
    gate_reason_tag,
    gate_tag,
)

# Version tags (MLflow): the decision, who took it, when, and why.
TAG = "approval"  # approved | rejected
TAG_BY = "approval.by"
TAG_AT = "approval.at"
TAG_REASON = "approval.reason"

APPROVED, REJECTED = "approved", "rejected"


@dataclass
class Awaiting:
    """A gate-passed candidate waiting for a person."""

    version: int
    trigger: str
    judged_against: str  # the champion the gate compared it with ("none" for a first model)
    stale: bool  # judged against a champion that no longer serves: re-run its checks first
    live: str = ""  # the live comparison's verdict (deploy.strategy: shadow asks after it)

    def to_dict(self) -> dict:
        return asdict(self)


def awaiting(versions: list[tuple[int, dict]], champion: int | None, *, gate_passed) -> list[Awaiting]:
    """Versions awaiting approval, newest first. ``versions``: (number, version tags);
    ``gate_passed(tags)`` -> True/False/None (the registry's reading of the gate tags)."""
    now = "none" if champion is None else str(champion)
    out = []
    for number, tags in sorted(versions, key=lambda v: -v[0]):
        if champion is not None and number <= champion:
            continue
        if gate_passed(tags) is not True or tags.get(VERSION_PROMOTED) in ("true", "false") or tags.get(TAG):
            continue  # failed / pending gate, served once (or rolled back), or already decided
        judged = tags.get(GATE_JUDGED_AGAINST, "none")
        live = tags.get(gate_reason_tag(LIVE_CHECK), "") if tags.get(gate_tag(LIVE_CHECK)) == "passed" else ""
        out.append(Awaiting(number, tags.get(VERSION_TRIGGER, "manual"), judged, judged != now, live))
    return out


def rejection(tags: dict) -> str | None:
    """Why a version may not serve because a person rejected it, or None."""
    if tags.get(TAG) != REJECTED:
        return None
    why = tags.get(TAG_REASON)
    return f"rejected by {tags.get(TAG_BY, 'someone')} at {tags.get(TAG_AT, '?')[:19]}" + (f": {why}" if why else "")


def decision_tags(decision: str, by: str, at: str, reason: str = "") -> dict[str, str]:
    tags = {TAG: decision, TAG_BY: by, TAG_AT: at}
    if reason:
        tags[TAG_REASON] = reason[:500]
    return tags


def os_user() -> str:
    """Who runs this process (the default ``--by`` of approve / reject)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return os.environ.get("USER") or f"uid {os.getuid()}"
