"""The live comparison of a staged candidate (``live_shadow``) as plain functions: the endpoint's
evidence (``serving/staging.py``) in, a verdict with readable reasons and a table out.

On the same live rows, scored by both models: the share of rows where they agree (same label;
regression: within ``max_relative_difference``), the Kolmogorov-Smirnov distance between their
score distributions, the candidate's error rate, its single-row latency p99 against
``gate.latency_budget_ms`` and, when labelled batches later carry ids the endpoint saw, both models'
realised metric on exactly those rows by the same rule as ``not_worse_than_champion``
(``gate.judge_against_champion``: paired bootstrap). Every figure is judged; the reason names each
one that fails.
"""

from __future__ import annotations

import marshal
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from ml_platform.core import files
from ml_platform.core.gate import Verdict, judge_against_champion
from ml_platform.core.stage_files import (  # noqa: F401 - re-exported
    FRAMES,
    count_rows,
    evidence_files,
    expired,
    failures,
    frame_blocks,
)
from ml_platform.names import COL_ERROR, COL_ID, COL_REQUEST, COL_TS

CHECK = "live_shadow"


@dataclass
class Evidence:
    """What the endpoint recorded for one staged version (every worker, every restart)."""

    version: int
    rows: pd.DataFrame  # rid, id, _ts, features..., champion / candidate outputs, candidate_ms, error
    champion_scores: np.ndarray | None = None  # probabilities [N, k] or values [N]
    candidate_scores: np.ndarray | None = None
    classes: list | None = None
    latency_ms: np.ndarray = field(default_factory=lambda: np.empty(0))
    dropped: int = 0
    failures: list[str] = field(default_factory=list)  # a canary rolled back on live traffic, a load failure

    @property
    def n(self) -> int:
        return len(self.rows)


def read_evidence(model_dir: Path, version: int) -> Evidence:
    """Every evidence block of ``version`` under ``model_dir`` (``<live_samples>/<model>``) as rows."""
    frames, champ, cand, lat, errors, classes = [], [], [], [], [], None
    dropped = 0
    for p in sorted(Path(model_dir).glob(f"stage-v{version}-stats-*.json")):
        try:
            dropped += int(orjson.loads(p.read_bytes()).get("dropped", 0))
        except (OSError, orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as e:
            files.warn_skipped(p, f"unreadable ({type(e).__name__}): skipped", "ml_platform.staging")
            continue
    for p in evidence_files(model_dir, version):
        for where, b in evidence_blocks(p):
            if isinstance(b, str):
                files.warn_skipped(p, f"{where} {b}: skipped", "ml_platform.staging")
                continue
            try:
                n = int(b["rows"])
            except (KeyError, TypeError, ValueError) as e:
                files.warn_skipped(
                    p, f"{where} is not an evidence block ({type(e).__name__}): skipped", "ml_platform.staging"
                )
                continue
            cols = {COL_REQUEST: b.get("rid"), COL_ID: b.get("id") or [None] * n, COL_TS: [b.get("ts")] * n}
            cols.update(b.get("features") or {})
            err = b.get("error")
            ms = b.get("candidate_ms")
            if isinstance(ms, list):
                lat.extend(x for x in ms if x is not None)
            elif ms is not None:
                lat.append(ms)
            co, ca = b.get("champion_out"), b.get("candidate_out")
            if co is None:
                continue  # the champion's copy could not be scored: nothing to compare
            cs, classes = _scores(co, classes)
            if ca is None:
                ks = np.full_like(cs, np.nan, dtype=np.float64)
            else:
                ks, classes = _scores(ca, classes)
            frames.append(pd.DataFrame(cols))
            errors.extend([err] * n)
            champ.append(cs)
            cand.append(ks)
    if not frames:
        return Evidence(version, pd.DataFrame(), failures=failures(model_dir, version), dropped=dropped)
    rows = pd.concat(frames, ignore_index=True)
    rows[COL_ERROR] = pd.Series(errors, dtype=object)
    return Evidence(
        version,
        rows,
        np.concatenate(champ),
        np.concatenate(cand),
        classes,
        np.asarray(lat, dtype=np.float64),
        dropped,
        failures(model_dir, version),
    )


def evidence_blocks(p: Path):
    """(where, block) of one evidence file; instead of a block, why it is unreadable (a str)."""
    data = p.read_bytes()
    if p.suffix == FRAMES:
        for k, (head, body) in enumerate(frame_blocks(data), 1):
            try:
                yield f"block {k}", frame_line(head, body, f"{p.stem}-{k}")
            except (ValueError, EOFError, TypeError, KeyError, IndexError) as e:
                yield f"block {k}", f"does not decode ({type(e).__name__}: {e})"
        return
    for lineno, line in enumerate(data.splitlines(), 1):
        try:
            yield f"line {lineno}", orjson.loads(line)
        except orjson.JSONDecodeError as e:
            yield f"line {lineno}", f"is not JSON ({e})"


def frame_line(head: dict, body: bytes, stem: str) -> dict:
    """A ``.frames`` block (single-row records the worker scored itself: request id, the row's
    ``(numbers, categories)``, ids, both models' outputs as lists, the candidate's milliseconds)
    as the block the shadow scorer would have written (``serving/shadow_scorer.py``)."""
    recs = marshal.loads(b"[" + struct.pack("<i", int(head["records"])) + body)
    out: dict = {
        "ts": head.get("ts"),
        "rows": len(recs),
        "rid": [r[0] if r[0] is not None else f"{stem}-{i}" for i, r in enumerate(recs)],
        "id": [r[2][0] if r[2] is not None else None for r in recs] if head.get("id_column") else None,
        "features": {name: [r[1][0 if numeric else 1][j] for r in recs] for name, numeric, j, _ in head["plan"]},
        "candidate_ms": [r[5] for r in recs],
        "error": None,
    }
    for key, k in (("champion_out", 3), ("candidate_out", 4)):
        cols = [[v for r in recs for v in r[k][j]] for j in range(len(recs[0][k]))] if recs else []
        if len(cols) == 2:  # a classifier: labels, probabilities [N, k]
            out[key] = {"label": cols[0], "probabilities": cols[1]}
        else:  # a regressor's [N, 1] values, flat as the scorer writes them
            out[key] = {"value": np.asarray(cols[0] if cols else [], dtype=np.float64).reshape(-1)}
    return out


def _scores(out: dict, classes):
    if "probabilities" in out:
        proba = np.asarray(out["probabilities"], dtype=np.float64)
        return proba, classes
    return np.asarray(out.get("value"), dtype=np.float64), classes


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (the largest gap between the two empirical CDFs)."""
    a, b = np.sort(a), np.sort(b)
    if not len(a) or not len(b):
        return float("nan")
    grid = np.concatenate([a, b])
    return float(
        np.max(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)))
    )


def _one_score(x: np.ndarray) -> np.ndarray:
    if x.ndim == 2:
        return x[:, 1] if x.shape[1] == 2 else x.max(axis=1)
    return x


@dataclass
class Judged:
    verdict: Verdict
    table: list[dict]  # one row per criterion: criterion, value, limit, verdict
    labelled_rows: int = 0
    # refused by agreement or score distance alone, too few labelled rows to overrule them: labels
    # could still decide (a shadow waits for them, control/staging.judge_and_conclude)
    wants_labels: bool = False


def compare(
    ev: Evidence,
    cfg,
    *,
    champion_version: int,
    classes: list | None,
    labels: pd.Series | None = None,
) -> Judged:
    """Judge ``ev`` (at least ``min_requests`` rows or not: the caller decides when to ask).
    ``cfg``: the model's config (``deploy.live_check``, ``gate``, ``task``). ``labels``: the
    target by id (str) from labelled batches; the rows whose id is there are judged by the gate's
    rule as well."""
    lc = cfg.deploy.live_check
    budget = cfg.gate.latency_budget_ms
    figures: dict = {"rows": ev.n, "champion_version": champion_version, "candidate_version": ev.version}
    table: list[dict] = []
    bad: list[str] = []

    sanity: list[tuple[dict, str]] = []  # failed sanity bars: overruled when labelled rows pass

    def judge(name: str, value, limit: str, ok: bool, why: str, sanity_bar: bool = False) -> None:
        row = {"criterion": name, "value": value, "limit": limit, "verdict": "pass" if ok else "FAIL"}
        table.append(row)
        if not ok:
            bad.append(why)
            if sanity_bar:
                sanity.append((row, why))

    for f in ev.failures:
        judge("live failure", f, "none", False, f"failed on live traffic: {f}")
    if ev.n == 0:
        judge("rows", 0, "> 0", False, "no live rows were scored by both models")
        return Judged(Verdict(CHECK, False, "; ".join(bad), figures), table)
    err = ev.rows[COL_ERROR].notna().to_numpy()
    rate = float(err.mean())
    figures["error_rate"] = rate
    judge(
        "candidate errors",
        f"{int(err.sum())} of {ev.n} rows ({rate:.2%})",
        f"<= {lc.max_error_rate:.2%}",
        rate <= lc.max_error_rate,
        f"the candidate failed on {int(err.sum())} of {ev.n} live rows ({rate:.2%} > {lc.max_error_rate:.2%})",
    )
    ok = ~err & ~np.isnan(_one_score(ev.candidate_scores)) & ~np.isnan(_one_score(ev.champion_scores))
    champ, cand = ev.champion_scores[ok], ev.candidate_scores[ok]
    if ok.sum():
        if cfg.task == "classification":
            agree = float(np.mean(champ.argmax(axis=1) == cand.argmax(axis=1)))
            what = "same label"
        else:
            agree = float(np.mean(np.abs(cand - champ) <= lc.max_relative_difference * np.abs(champ) + 1e-9))
            what = f"within {lc.max_relative_difference:.0%}"
        figures["agreement"] = agree
        judge(
            f"agreement ({what})",
            round(agree, 4),
            f">= {lc.min_agreement}",
            agree >= lc.min_agreement,
            f"candidate and champion agree on {agree:.1%} of live rows (< {lc.min_agreement:.0%})",
            sanity_bar=True,
        )
        dist = ks_distance(_one_score(champ), _one_score(cand))
        figures["score_distance"] = dist
        judge(
            "score distance (KS)",
            round(dist, 4),
            f"<= {lc.max_score_distance}",
            dist <= lc.max_score_distance,
            f"the score distributions differ (KS {dist:.3f} > {lc.max_score_distance})",
            sanity_bar=True,
        )
    if len(ev.latency_ms):
        p99 = float(np.percentile(ev.latency_ms, 99))
        figures["latency_p99_ms"] = p99
        judge(
            "latency p99 (single row, live)",
            f"{p99:.3f} ms ({len(ev.latency_ms)} calls)",
            f"<= {budget} ms",
            p99 <= budget,
            f"live single-row p99 {p99:.2f} ms exceeds the latency budget {budget} ms",
        )
    labelled = 0
    realised = None  # the gate's rule on labelled live rows, once there are enough of them
    if labels is not None and len(labels) and ok.sum():
        ids = ev.rows[COL_ID].astype(str).to_numpy()
        hit = ok & pd.Series(ids).isin(labels.index).to_numpy()
        labelled = int(hit.sum())
        figures["labelled_rows"] = labelled
        if 0 < labelled < cfg.gate.min_comparison_rows:
            table.append(
                {
                    "criterion": f"realised {cfg.gate_metric} on labelled live rows",
                    "value": f"{labelled} rows",
                    "limit": f">= {cfg.gate.min_comparison_rows} rows (gate.min_comparison_rows)",
                    "verdict": "not judged",
                }
            )
        elif labelled:
            y = labels.loc[ids[hit]].to_numpy()
            v = judge_against_champion(
                cfg,
                y,
                ev.candidate_scores[hit],
                classes,
                ev.champion_scores[hit],
                classes,
                champion_version,
                note=f"{labelled} labelled live rows",
            )
            figures.update({f"labelled_{k}": x for k, x in v.figures.items() if isinstance(x, (int, float, str))})
            judge(f"realised {cfg.gate_metric} on labelled live rows", v.reason, "gate rule", v.passed, v.reason)
            realised = v
    # Agreement and score distance are sanity bars for when nothing else is known: after a concept
    # change a better candidate disagrees with the champion by design. Labelled rows that pass the
    # gate's rule outrank them.
    overruled = [why for _, why in sanity] if realised is not None and realised.passed else []
    for row, why in sanity if overruled else ():
        row["verdict"] = "overruled by the labelled rows"
        bad.remove(why)
    if bad:
        reason = "; ".join(bad)
    elif overruled:
        reason = (
            f"v{ev.version} passed the gate's rule on {labelled} labelled live rows ({realised.reason}); "
            f"overruled by them: {'; '.join(overruled)}"
        )
    else:
        reason = (
            f"v{ev.version} matches champion v{champion_version} on {ev.n} live rows"
            + (f" (agreement {figures['agreement']:.1%}" if "agreement" in figures else " (")
            + (f", KS {figures['score_distance']:.3f}" if "score_distance" in figures else "")
            + (f", p99 {figures['latency_p99_ms']:.2f} ms" if "latency_p99_ms" in figures else "")
            + (f", {labelled} labelled rows" if labelled else ", no labelled rows yet")
            + ")"
        )
    wants_labels = bool(sanity) and realised is None and len(bad) == len(sanity)
    return Judged(Verdict(CHECK, not bad, reason, figures), table, labelled, wants_labels)


def scores_png(ev: Evidence, champion_version: int | None) -> bytes:
    """Histograms of both models' scores on the same live rows (PNG bytes)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if ev.n:
        a, b = _one_score(ev.champion_scores), _one_score(ev.candidate_scores)
        b = b[~np.isnan(b)]
        bins = np.histogram_bin_edges(np.concatenate([a, b]) if len(b) else a, bins=30)
        ax.hist(a, bins=bins, alpha=0.55, label=f"champion v{champion_version}", color="#1f77b4")
        ax.hist(b, bins=bins, alpha=0.55, label=f"candidate v{ev.version}", color="#ff7f0e")
        ax.legend(fontsize=8)
    ax.set_xlabel("score (P(positive class), max probability, or prediction)")
    ax.set_ylabel("live rows")
    ax.set_title(f"Live scores of both models on the same {ev.n} rows", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
