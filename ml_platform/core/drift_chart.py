"""The per-feature drift bar chart shown in the UI, drawn with Pillow.

Every drift report carries one (each batch of a backlog, live drift), so its cost is paid per
file: matplotlib's was a large share of a small file's ingest CPU (benchmarks/README.md). This
draws the same chart (bars of statistic / threshold, drifted in red, the threshold dashed,
matplotlib's font) directly.
"""

from __future__ import annotations

import importlib.util
import io
import math
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ml_platform.core.drift import DriftResult

DRIFTED, STABLE, SCORE = (214, 39, 40), (31, 119, 180), (127, 127, 127)
WIDTH = 700  # px: the 7-inch, 100-dpi figure it replaces
GREY, BLACK, WHITE = (80, 80, 80), (0, 0, 0), (255, 255, 255)


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (matplotlib's default, shipped in its package data: found without importing it),
    else Pillow's own font."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.exists():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def _ticks(top: float) -> list[str]:
    """Round tick values from 0 to ``top`` (4-8 of them), as labels with the step's decimals."""
    raw = top / 6
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    decimals = len(f"{step:.6f}".rstrip("0").split(".")[1]) or (1 if top < 10 else 0)
    return [f"{i * step:.{decimals}f}" for i in range(int(top / step + 1e-9) + 1)]


def drift_bar_chart_png(result: DriftResult) -> bytes:
    """Horizontal bars of statistic / threshold per feature (1.0 = threshold), drifted in
    red; numeric features use the larger of the PSI and distance ratios. PNG bytes."""
    items = list(result.features) + ([result.score] if result.score is not None else [])
    labels, ratios, colors = [], [], []
    for f in items:
        r, tag = f.threshold_ratio()
        labels.append(f"{'model score' if f.kind == 'score' else f.feature} ({tag})")
        ratios.append(r if math.isfinite(r) and r > 0 else 0.0)
        colors.append(DRIFTED if f.drifted else (SCORE if f.kind == "score" else STABLE))
    height = int(max(200, 32 * len(items) + 120))
    img = Image.new("RGB", (WIDTH, height), WHITE)
    draw = ImageDraw.Draw(img)
    small, label_font, title_font = _font(10), _font(11), _font(12)

    title = f"Drift: {result.verdict} ({result.share_drifted:.0%} of features drifted, {result.rows} rows)"
    left = int(min(max([draw.textlength(s, font=label_font) for s in labels] or [0]) + 18, WIDTH * 0.45))
    x0, x1, y0, y1 = left, WIDTH - 16, 30, height - 48
    top = max([1.0, *ratios]) * 1.05  # the threshold always in view, bars a little short of the edge
    top = min(top, 1e6)

    def px(v: float) -> float:
        return x0 + (x1 - x0) * min(v, top) / top

    draw.text(((x0 + x1) / 2, 15), title, fill=BLACK, font=title_font, anchor="mm")
    for t in _ticks(top):  # x axis: ticks, grid-free like the figure it replaces
        x = px(float(t))
        draw.line([(x, y1), (x, y1 + 4)], fill=BLACK)
        draw.text((x, y1 + 6), t, fill=BLACK, font=small, anchor="mt")
    draw.text(((x0 + x1) / 2, height - 14), "statistic / threshold", fill=BLACK, font=label_font, anchor="mm")

    if items:
        slot = (y1 - y0) / len(items)
        for i, (label, r, c) in enumerate(zip(labels, ratios, colors, strict=True)):  # first item on top
            yc = y0 + slot * (i + 0.5)
            half = slot * 0.4
            draw.rectangle([(x0, yc - half), (max(px(r), x0 + 1), yc + half)], fill=c)
            draw.line([(x0 - 4, yc), (x0, yc)], fill=BLACK)
            draw.text((x0 - 6, yc), label, fill=BLACK, font=label_font, anchor="rm")
    xt = px(1.0)
    for y in range(y0, y1, 8):  # the threshold, dashed
        draw.line([(xt, y), (xt, min(y + 4, y1))], fill=BLACK, width=1)
    draw.rectangle([(x0, y0), (x1, y1)], outline=BLACK)

    # legend, lower right
    lw = draw.textlength("threshold", font=small) + 40
    lx, ly = x1 - lw - 6, y1 - 26
    draw.rectangle([(lx, ly), (x1 - 6, y1 - 6)], fill=WHITE, outline=(204, 204, 204))
    for x in range(int(lx + 6), int(lx + 26), 7):
        draw.line([(x, ly + 10), (min(x + 4, lx + 26), ly + 10)], fill=BLACK)
    draw.text((lx + 32, ly + 10), "threshold", fill=BLACK, font=small, anchor="lm")

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
