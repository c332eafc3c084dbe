"""The per-feature drift bar chart shown in the UI."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    pass
from ml_platform.core.drift import DriftResult


def drift_bar_chart_png(result: DriftResult) -> bytes:
    """Horizontal bars of statistic / threshold per feature (1.0 = threshold), drifted in
    red; numeric features use the larger of the PSI and distance ratios. PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    items = list(result.features) + ([result.score] if result.score is not None else [])
    labels, ratios, colors = [], [], []
    for f in items:
        r, tag = f.threshold_ratio()
        labels.append(f"{'model score' if f.kind == 'score' else f.feature} ({tag})")
        ratios.append(r)
        colors.append("#d62728" if f.drifted else ("#7f7f7f" if f.kind == "score" else "#1f77b4"))
    height = max(2.0, 0.32 * len(items) + 1.2)
    fig = Figure(figsize=(7.0, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(items))
    if items:
        ax.barh(y, ratios, color=colors)
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel("statistic / threshold")
    ax.set_title(
        f"Drift: {result.verdict} ({result.share_drifted:.0%} of features drifted, {result.rows} rows)", fontsize=9
    )
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ------------------------------------------------------------------ performance drop
