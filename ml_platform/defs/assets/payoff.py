"""<model>/payoff: the payoff ledger in the UI (``core/payoff``): retrains by trigger, bad deploys
the gate prevented, time to recovery per drift episode, served metric around each promotion,
training time; a table per fact and a chart.

Refreshed by the automation sensor in its own run after a candidate or a champion move (not in
the train pool: it never delays a deploy); `status` computes the same ledger on demand."""

import io

import dagster as dg
import pandas as pd

from ml_platform.control.chain import Chain
from ml_platform.control.ledger import payoff_of
from ml_platform.core import payoff
from ml_platform.defs.metadata import plot, table
from ml_platform.resources.registry import MlflowRegistry

# Any candidate or champion move since the last ledger (or none yet), once nothing upstream runs.
REFRESH = (
    (dg.AutomationCondition.missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after a candidate or a champion move")


def _v(x) -> str:
    return "none" if x is None else f"v{x}"


def promotions_table(p: payoff.Payoff) -> dg.MetadataValue:
    m = p.metric
    return table(
        pd.DataFrame(
            [
                {
                    "at": r.at[:19],
                    "kind": r.kind,
                    "from": _v(r.previous),
                    "to": _v(r.to),
                    "trigger": r.trigger,
                    "by": r.by,
                    f"served {m} before": r.served_before,
                    "batches before": r.batches_before,
                    f"served {m} after": r.served_after,
                    "batches after": r.batches_after,
                    "gate delta (fair set)": r.gate_delta,
                }
                for r in p.promotions
            ]
        ),
        empty="no promotion yet",
    )


def episodes_table(p: payoff.Payoff) -> dg.MetadataValue:
    return table(
        pd.DataFrame(
            [
                {
                    "first drifted batch": e.first_batch,
                    "landed": e.started_at[:19],
                    "shifted batches": e.batches,
                    "performance dropped": e.performance_dropped,
                    "status": e.status,
                    "new champion": _v(e.recovered_by)
                    if e.recovered_by
                    else "none yet"
                    if e.status == "open"
                    else "none",
                    "time to recovery (s)": None
                    if e.time_to_recovery_seconds is None
                    else round(e.time_to_recovery_seconds, 1),
                    "retrains": e.retrains,
                    "blocked": e.blocked,
                }
                for e in p.episodes
            ]
        ),
        empty="no drift episode",
    )


def blocked_table(p: payoff.Payoff) -> dg.MetadataValue:
    return table(
        pd.DataFrame(
            [
                {"version": f"v{b.version}", "trigger": b.trigger, "stopped by": b.by, "why": "; ".join(b.why)}
                for b in p.blocked
            ]
        ),
        empty="no candidate blocked",
    )


SPARKS = "▁▂▃▄▅▆▇█"
MIN_SPAN = 0.02  # of the metric's size: noise in the 4th decimal is not drawn as a cliff


def value_range(values: list[float]) -> tuple[float, float]:
    """(low, high) to draw ``values`` on: their range, widened around its middle to at least
    MIN_SPAN of their size."""
    lo, hi = min(values), max(values)
    span = max(hi - lo, MIN_SPAN * max(abs(lo), abs(hi)), 1e-12)
    mid = (lo + hi) / 2
    return mid - span / 2, mid + span / 2


def sparkline(p: payoff.Payoff) -> str:
    """The served metric per labelled batch as one line of text (seen without a click: the PNG
    chart sits behind "Show Markdown"); "|" where the champion changed, "·" a batch without a
    served metric (no labels, or no champion to score it)."""
    vals = [b.served_metric for b in p.timeline]
    known = [v for v in vals if v is not None]
    if not known:
        return "no labelled batch scored by a champion yet"
    lo, hi = value_range(known)
    out, last = [], None
    for b, v in zip(p.timeline, vals):
        if last is not None and b.served_version is not None and b.served_version != last:
            out.append("|")
        last = b.served_version if b.served_version is not None else last
        out.append("·" if v is None else SPARKS[min(7, max(0, int((v - lo) / (hi - lo) * 7)))])
    return f"{''.join(out)}  ({p.metric} {min(known):.3f} .. {max(known):.3f})"


def chart(p: payoff.Payoff) -> bytes:
    """Served metric per batch (a colour per champion), drifted batches shaded, promotions as
    vertical lines."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3), dpi=90)
    try:
        xs = list(range(len(p.timeline)))
        for i, b in enumerate(p.timeline):
            if b.drifted or b.dropped:
                ax.axvspan(i - 0.5, i + 0.5, color="tab:red", alpha=0.12, lw=0)
        for version in sorted({b.served_version for b in p.timeline if b.served_version is not None}):
            pts = [
                (x, b.served_metric)
                for x, b in zip(xs, p.timeline)
                if b.served_version == version and b.served_metric is not None
            ]
            if pts:
                ax.plot(*zip(*pts), "o-", ms=4, label=f"v{version}")
        for r in p.promotions:
            t = payoff.epoch(r.at)
            x = next((i for i, b in enumerate(p.timeline) if b.scored_at >= t), len(p.timeline)) - 0.5
            ax.axvline(x, color="black", ls="--", lw=0.8)
        known = [b.served_metric for b in p.timeline if b.served_metric is not None]
        if known:
            lo, hi = value_range(known)
            pad = (hi - lo) * 0.1
            ax.set_ylim(lo - pad, hi + pad)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("batch (landing order); red = drifted or under-performing")
        ax.set_ylabel(f"served {p.metric}")
        ax.set_title(f"served {p.metric} per batch; dashed = champion moves")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def build_payoff(chain: Chain) -> dg.AssetsDefinition:
    @dg.asset(
        key=chain.key("payoff"),
        group_name=chain.name,
        kinds={"python"},
        deps=[chain.key("candidate_model"), chain.key("deployed_model")],
        automation_condition=REFRESH,
        description="What self-healing did and cost: retrains by trigger, bad deploys prevented, "
        "time to recovery per drift episode, served metric around each promotion, "
        "training time.",
    )
    def payoff_ledger(context: dg.AssetExecutionContext, ml_platform_registry: MlflowRegistry) -> dg.MaterializeResult:
        p = payoff_of(chain.settings, ml_platform_registry, chain.name)
        d = p.to_dict()
        ttr = d["median_time_to_recovery_seconds"]
        return dg.MaterializeResult(
            metadata={
                "retrains": p.retrains,
                "retrains_by_trigger": ", ".join(f"{k}: {n}" for k, n in p.retrains_by_trigger.items()) or "none",
                "bad_deploys_prevented": p.bad_deploys_prevented,
                "promotions": promotions_table(p),
                "drift_episodes": episodes_table(p),
                "median_time_to_recovery_s": round(ttr, 1) if ttr is not None else "no recovery yet",
                "blocked_candidates": blocked_table(p),
                "training_seconds": p.train_seconds_total,
                "training_seconds_per_retrain": p.train_seconds_per_retrain
                if p.train_seconds_per_retrain is not None
                else "no timed retrain",
                "training_seconds_by_trigger": ", ".join(f"{k}: {s:.1f}" for k, s in p.train_seconds_by_trigger.items())
                or "none",
                "served_per_batch": sparkline(p),
                "chart": plot(chart(p), f"served {p.metric} per batch"),
            }
        )

    return payoff_ledger
