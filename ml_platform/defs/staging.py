"""Staging before production in Dagster: the ``live_shadow`` blocking check on candidate_model (the
live comparison of the staged candidate, ``control/staging.py``) and the job that runs it alone.
The train job leaves it out (a candidate has no live evidence when it is trained); the staging
sensor launches ``<model>_stage`` when the evidence is in, the candidate failed live, or its time ran
out. The check's page shows the verdict first, one row per criterion and the two score histograms."""

import dagster as dg
import pandas as pd

from ml_platform import names
from ml_platform.control import staging
from ml_platform.control.chain import Chain
from ml_platform.core import staging as live
from ml_platform.defs.metadata import VERDICT, audit_table, figures, plot, table
from ml_platform.names import LIVE_CHECK, TAG_MODEL
from ml_platform.resources.endpoint import EndpointClient
from ml_platform.resources.registry import MlflowRegistry
from ml_platform.runtime import console


def staged_strategy(chain: Chain) -> bool:
    return chain.cfg.deploy.strategy != "direct"


def live_check_key(chain: Chain) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(chain.key("candidate_model"), LIVE_CHECK)


def outcome_metadata(chain: Chain, out: staging.Outcome) -> dict:
    """Verdict line first, then the criteria table, the figures and the score histograms."""
    md: dict = {VERDICT: f"{out.state}: {out.reason}"}
    if out.progress is not None:
        md["progress"] = out.progress.line()
    j = out.judged
    if j is not None:
        md["criteria"] = table(pd.DataFrame(j.table).astype(str), empty="no criterion judged")
        md.update(figures({k: v for k, v in j.verdict.figures.items() if isinstance(v, (int, float, str))}))
        ev = live.read_evidence(staging.evidence_dir(chain.settings, chain.name), out.version)
        png = live.scores_png(ev, j.verdict.figures.get("champion_version"))
        path = chain.dir / "staging" / f"v{out.version}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        md["scores"] = plot(png, "live scores: champion vs candidate")
    return md


def ended_by_hand(model: str, version: int, reason: str) -> dg.AssetCheckEvaluation:
    """A stage a person ended (``reject``, ``rollback``) as a failed ``live_shadow`` evaluation on
    the candidate's asset, so the check's history in the UI shows it beside the judged ones."""
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey([model, "candidate_model"]),
        check_name=LIVE_CHECK,
        passed=False,
        metadata={VERDICT: f"refused: {reason}", "candidate_version": version},
        description=f"v{version}: {reason}",
    )


def build_live_check(chain: Chain) -> dg.AssetChecksDefinition:
    d = chain.cfg.deploy

    @dg.asset_check(
        asset=chain.key("candidate_model"),
        name=LIVE_CHECK,
        blocking=True,
        description=f"live comparison of the staged candidate ({d.strategy}) with the champion on the same live "
        "requests: agreement, score distance, errors, latency, labelled live rows (docs/staging.md)",
    )
    def live_shadow(
        context: dg.AssetCheckExecutionContext,
        ml_platform_registry: MlflowRegistry,
        ml_platform_endpoint: EndpointClient,
    ) -> dg.AssetCheckResult:
        out = staging.judge_and_conclude(
            chain.settings,
            ml_platform_registry,
            ml_platform_endpoint,
            chain.name,
            actor=f"dagster run {context.run.run_id}",
        )
        md = outcome_metadata(chain, out)
        if out.state == "promoted":
            p = out.promotion
            context.instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    asset_key=chain.key("deployed_model"),
                    metadata={
                        "served_version": out.version,
                        "previous_version": f"v{p.previous}" if p and p.previous is not None else "-",
                        "endpoint_status": p.endpoint if p else "",
                        "trigger": f"live comparison ({d.strategy})",
                        "alias_moves": audit_table(chain.dir),
                    },
                )
            )
        if out.state in ("pending", "nothing staged"):
            return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, metadata=md)
        # passed and awaiting a person's approval (deploy.approval: required): passed, nothing moved yet
        return dg.AssetCheckResult(passed=out.state in ("promoted", "awaiting approval"), metadata=md)

    return live_shadow


def build_stage_job(chain: Chain):
    return dg.define_asset_job(
        names.stage_job(chain.name),
        selection=dg.AssetSelection.checks(live_check_key(chain)),
        tags={TAG_MODEL: chain.name},
        executor_def=dg.in_process_executor,
        config=console.JOB_CONFIG,
        description=f"Judge the staged {chain.name} candidate on live traffic (live_shadow): promote or refuse it.",
    )


def staged_observation(chain: Chain, note: str, version: int) -> dg.AssetObservation:
    p = staging.progress(chain.settings, chain.name)
    return dg.AssetObservation(
        asset_key=chain.key("deployed_model"),
        metadata={
            VERDICT: p.line() if p is not None else note,
            "staged": note,
            **figures({"candidate_version": version}),
            "next": f"{chain.name}_stage runs live_shadow once the evidence is in (docs/staging.md)",
            "stop it": f"`ml-platform reject --model {chain.name} --reason ...`: the stage ends at once",
        },
    )
