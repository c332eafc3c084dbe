"""When the automation sensor refreshes <model>/payoff: once when it is missing, once after each
candidate or champion move; never again until something changes (its runs stay cheap)."""

import dagster as dg

from ml_platform.defs.definitions import build_definitions

PAYOFF = dg.AssetKey(["churn", "payoff"])
DEPLOY = dg.AssetKey(["churn", "deployed_model"])
CANDIDATE = dg.AssetKey(["churn", "candidate_model"])


def test_payoff_is_refreshed_after_each_move_and_only_then(settings):
    defs = build_definitions(settings)
    assert defs.resolve_assets_def(PAYOFF).op.pool is None, "the ledger must never wait for the train pool"
    inst = dg.DagsterInstance.ephemeral()
    sel = dg.AssetSelection.keys(PAYOFF)
    cursor, got = None, []

    def tick():
        nonlocal cursor
        r = dg.evaluate_automation_conditions(defs=defs, instance=inst, asset_selection=sel, cursor=cursor)
        cursor = r.cursor
        got.append(r.get_num_requested(PAYOFF))

    tick()
    tick()  # missing: requested once
    inst.report_runless_asset_event(dg.AssetMaterialization(PAYOFF))
    tick()  # fresh: nothing
    inst.report_runless_asset_event(dg.AssetMaterialization(DEPLOY))
    tick()  # a champion move: once
    inst.report_runless_asset_event(dg.AssetMaterialization(PAYOFF))
    tick()
    inst.report_runless_asset_event(dg.AssetMaterialization(CANDIDATE))
    tick()  # a new candidate: once
    tick()
    assert got == [0, 1, 0, 1, 0, 1, 0], got
