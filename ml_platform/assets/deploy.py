"""deployed_model: the champion move for the newest candidate (``promotion.move_champion``),
which refuses any version whose blocking gate checks did not all pass, whoever asks: the
train run, the automation condition, a click on this asset alone, a re-execution, a backfill."""


import dagster as dg

from ml_platform.assets.common import Chain, train_pool
from ml_platform.core.candidate import Candidate
from ml_platform.jobs import audit_table
from ml_platform.promotion import PromotionError, move_champion
from ml_platform.resources.endpoint import EndpointClient
from ml_platform.resources.registry import MlflowRegistry


def build_deployed_model(chain: Chain) -> dg.AssetsDefinition:
    @dg.asset(key=chain.key("deployed_model"), group_name=chain.name, kinds={"onnx"},
              ins={"candidate_model": dg.AssetIn(chain.key("candidate_model"))}, pool=train_pool(chain),
              # Runs launched by sensors include this asset, and a failed blocking check stops it
              # in the same run; this condition covers candidates materialized on their own.
              automation_condition=dg.AutomationCondition.eager()
              & dg.AutomationCondition.all_deps_blocking_checks_passed(),
              description="The champion: serving on the endpoint once every blocking gate check passed.")
    def deployed_model(context: dg.AssetExecutionContext, registry: MlflowRegistry,
                       endpoint: EndpointClient, candidate_model: Candidate) -> dg.MaterializeResult:
        version = candidate_model.version
        try:
            p = move_champion(chain.settings, registry, endpoint, chain.name, version,
                              actor=f"dagster run {context.run_id}", trigger=candidate_model.trigger,
                              reason="passed every blocking gate check")
        except PromotionError as e:
            raise dg.Failure(description=f"v{version} not deployed: {e}",
                             metadata={"candidate_version": version, "refusal": str(e)}) from None
        context.log.info(f"v{version} is the champion (was v{p.previous}); endpoint: {p.endpoint}")
        return dg.MaterializeResult(metadata={
            "served_version": version,
            "previous_version": f"v{p.previous}" if p.previous is not None else "no previous champion",
            "endpoint_url": dg.MetadataValue.url(f"{endpoint.url}/v2/models/{chain.name}"),
            "endpoint_status": p.endpoint, "smoke_request": p.smoke or "not sent",
            "trigger": candidate_model.trigger,
            **{f"holdout_{k}": round(v, 5) for k, v in candidate_model.metrics.items()},
            "alias_moves": audit_table(chain),
        })

    return deployed_model
