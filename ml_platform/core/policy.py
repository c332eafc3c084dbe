"""The retrain policy: given the batch history, should this batch trigger a retrain, and why.

Pure and deterministic over the catalog records, so the sensor (files arriving one by
one) and `ml-platform run` (files landed at once) reach the same decisions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ml_platform.settings import ModelConfig


@dataclass
class Decision:
    retrain: bool
    trigger: str  # arrival | drift | performance | schedule | manual | none
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def decide(record: dict, history: list[dict], cfg: ModelConfig, *, has_champion: bool,
           now: float | None = None) -> Decision:
    """Decision for ``record`` (a validated batch); ``history`` = earlier records, arrival order."""
    if record.get("status") != "validated":
        return Decision(False, "none", f"batch {record.get('status')}: {record.get('reason')}")
    if not has_champion:
        return Decision(True, "arrival", "no champion yet: a retrain is always allowed")
    if cfg.retrain.policy == "on_arrival":
        return Decision(True, "arrival", "policy on_arrival: every validated batch retrains")
    return Decision(False, "none", "policy on_drift: no drift monitoring result yet")
