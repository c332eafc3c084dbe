"""deployed_model: the champion move for the newest candidate (``promotion.move_champion``),
which refuses any version whose blocking gate checks did not all pass, whoever asks: the
train run, the automation condition, a click on this asset alone, a re-execution, a backfill.

With ``deploy.approval: required`` the train run and the automation leave a passing candidate
"awaiting approval" (an observation on this asset, no materialization); a person approves it
by materializing this asset on its own (UI) or with `ml-platform approve`. With ``deploy.strategy:
shadow`` the train run stages it first and the person is asked once ``live_shadow`` passed
(``names.approval_checks``)."""

import dagster as dg

from ml_platform import names
from ml_platform.control import staging
from ml_platform.control.chain import Chain
from ml_platform.control.operator_actions import approve
from ml_platform.control.promotion import Promotion, PromotionError, move_champion
from ml_platform.control.servable import checks_of
from ml_platform.core.candidate import Candidate
from ml_platform.core.stage_files import who_answers
from ml_platform.defs.metadata import VERDICT, audit_table, figures
from ml_platform.defs.staging import staged_observation
from ml_platform.names import AUTOMATION_RUN_TAGS, TAG_APPROVED_BY
from ml_platform.resources.endpoint import EndpointClient
from ml_platform.resources.registry import MlflowRegistry


def approval_required(chain: Chain) -> bool:
    return chain.cfg.deploy.approval == "required"


def held_for_approval(chain: Chain, run: dg.DagsterRun) -> bool:
    """In approval mode, whether this run only proposes the candidate: the train job, the
    automation, or any run that also trains it (a person has not seen it yet)."""
    if not approval_required(chain):
        return False
    automated = all(run.tags.get(k) == v for k, v in AUTOMATION_RUN_TAGS.items())
    selection = run.asset_selection
    trains_it = selection is None or chain.key("candidate_model") in selection
    return automated or run.job_name == names.train_job(chain.name) or trains_it


def ui_approver(run: dg.DagsterRun) -> str:
    return run.tags.get(TAG_APPROVED_BY) or run.tags.get("dagster/user") or "a Dagster UI user"


def build_deployed_model(chain: Chain) -> dg.AssetsDefinition:
    # Runs launched by sensors include this asset, and a failed blocking check stops it in the
    # same run; this condition covers candidates materialized on their own. In approval mode
    # nothing deploys by itself: no condition.
    auto = (
        dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
        if not approval_required(chain)
        else None
    )

    @dg.asset(
        key=chain.key("deployed_model"),
        group_name=chain.name,
        kinds={"onnx"},
        ins={"candidate_model": dg.AssetIn(chain.key("candidate_model"))},
        pool=names.train_pool(chain.name),
        automation_condition=auto,
        output_required=False,
        description="The champion: serving on the endpoint once every blocking gate check passed"
        + (
            " and a person approved it (deploy.approval: required; Materialize this asset "
            "alone to approve the newest candidate)."
            if approval_required(chain)
            else "."
        ),
    )
    def deployed_model(
        context: dg.AssetExecutionContext,
        ml_platform_registry: MlflowRegistry,
        ml_platform_endpoint: EndpointClient,
        candidate_model: Candidate,
    ):
        version = candidate_model.version
        run = context.run
        held = held_for_approval(chain, run)
        # a shadow runs before the approval (it answers no client): the person then sees its evidence
        shadow_first = held and staging.approval_after_live(chain.settings, chain.name)
        if shadow_first:
            shadow_first = staging.should_stage(chain.settings, ml_platform_registry, chain.name, version)
        if held and not shadow_first:
            yield awaiting_observation(chain, ml_platform_registry, candidate_model)
            context.log.info(
                f"v{version} passed the gate and awaits approval (deploy.approval: required): "
                f"materialize {chain.name}/deployed_model alone, or `ml-platform approve "
                f"--model {chain.name} --version {version}`"
            )
            return
        try:
            if approval_required(chain) and not shadow_first:
                staging.waive_first(ml_platform_registry, chain.settings, chain.name, version)
                p = approve(
                    chain.settings,
                    ml_platform_registry,
                    ml_platform_endpoint,
                    chain.name,
                    version,
                    by=ui_approver(run),
                    via=f"dagster run {context.run_id}",
                )
                if p.version != version:  # approved into staging (deploy.strategy): not serving yet
                    yield staged_observation(chain, p.endpoint, version)
                    return
            elif staging.should_stage(chain.settings, ml_platform_registry, chain.name, version):
                note = staging.stage(
                    chain.settings,
                    ml_platform_registry,
                    ml_platform_endpoint,
                    chain.name,
                    version,
                    actor=f"dagster run {context.run_id}",
                    trigger=candidate_model.trigger,
                )
                context.log.info(
                    f"{note}; {who_answers(chain.cfg.deploy.strategy)}"
                    + ("; then a person approves it (deploy.approval: required)" if shadow_first else "")
                )
                yield staged_observation(chain, note, version)
                return
            else:
                staging.waive_first(ml_platform_registry, chain.settings, chain.name, version)
                p = move_champion(
                    chain.settings,
                    ml_platform_registry,
                    ml_platform_endpoint,
                    chain.name,
                    version,
                    actor=f"dagster run {context.run_id}",
                    trigger=candidate_model.trigger,
                    reason="passed every blocking gate check",
                )
        except PromotionError as e:
            # An intended refusal, not a crash: the asset page gets the reasons as an observation
            # (no stack trace), and the run fails with them as its description (a lone
            # Materialize of this asset must not read as a success). Not retried: it would refuse again.
            refusal = {VERDICT: f"refused: {e}", **figures({"candidate_version": version}), "refusal": str(e)}
            yield dg.AssetObservation(asset_key=chain.key("deployed_model"), metadata=refusal)
            raise dg.Failure(
                description=f"v{version} not deployed: {e}", metadata=refusal, allow_retries=False
            ) from None
        was = f"was v{p.previous}" if p.previous is not None else "no previous champion"
        context.log.info(f"v{version} is the champion ({was}); endpoint: {p.endpoint}")
        yield dg.MaterializeResult(metadata=_served_metadata(chain, ml_platform_endpoint, candidate_model, p))

    return deployed_model


def _served_metadata(chain: Chain, endpoint: EndpointClient, candidate: Candidate, p: Promotion) -> dict:
    return {
        "served_version": candidate.version,
        "previous_version": f"v{p.previous}" if p.previous is not None else "no previous champion",
        "endpoint_url": dg.MetadataValue.url(f"{endpoint.url}/v2/models/{chain.name}"),
        "endpoint_status": p.endpoint,
        "smoke_request": p.smoke or "not sent",
        "trigger": candidate.trigger,
        **figures({f"holdout_{k}": v for k, v in candidate.metrics.items()}),
        "alias_moves": audit_table(chain.dir),
    }


def awaiting_observation(chain: Chain, registry: MlflowRegistry, candidate: Candidate) -> dg.AssetObservation:
    """What the asset page shows while a candidate waits for a person."""
    v = candidate.version
    return dg.AssetObservation(
        asset_key=chain.key("deployed_model"),
        metadata={
            "approval": f"awaiting approval: v{v}",
            **figures({"candidate_version": v}),
            "trigger": candidate.trigger,
            **figures({f"holdout_{k}": x for k, x in candidate.metrics.items()}),
            "gate": "; ".join(
                f"{c}: {state}"
                for c, (state, _) in registry.gate_verdicts(
                    chain.name, v, checks_of(chain.settings, chain.name)
                ).items()
            ),
            "approve": f"Materialize {chain.name}/deployed_model alone (optional run tag {TAG_APPROVED_BY}: your "
            f"name), or `ml-platform approve --model {chain.name} --version {v}`",
            "reject": f"`ml-platform reject --model {chain.name} --version {v} --reason ...`",
        },
    )
