"""Reading the endpoint's live sample back for drift: newest rows of one version, nulls restored."""

import json

import numpy as np

from ml_platform.core import live


def _write(d, name, rows, junk=b""):
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows) + junk)


def _row(i, version=2, plan="pro"):
    return {
        "tenure": float(i),
        "plan": plan,
        "_ts": f"2026-11-22T00:00:{i:02d}.000+00:00",
        "_version": version,
        "_prediction": 1,
        "_probabilities": {"0": 0.25, "1": 0.75},
    }


def test_newest_rows_of_the_version_oldest_first(tmp_path):
    d = tmp_path / "churn"
    _write(d, "live-20261122T000000000000Z-1.jsonl", [_row(i) for i in range(0, 5)])
    _write(
        d,
        "live-20261122T000010000000Z-1.jsonl",
        [_row(i) for i in range(5, 8)] + [_row(99, version=1)],
        junk=b"not json\n[1, 2]\n",
    )
    _write(d, ".live-20261122T000020000000Z-1.jsonl.tmp", [_row(50)])  # being written: ignored
    win = live.read_window(d, 2, ["tenure", "plan"], max_rows=6, score_column="s", missing_token="__missing__")
    assert win.frame["tenure"].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert win.frame["s"].tolist() == [0.75] * 6
    assert win.other_version_rows == 1 and win.unreadable_lines == 2 and len(win.files) == 2
    assert win.first_ts.endswith(":02.000+00:00") and win.last_ts.endswith(":07.000+00:00")


def test_missing_token_becomes_null_and_regression_scores_are_predictions(tmp_path):
    d = tmp_path / "price"
    rows = [{"size": None, "city": "__missing__", "_ts": "t", "_version": 1, "_prediction": 12.5}]
    _write(d, "live-20261122T000000000000Z-1.jsonl", rows)
    win = live.read_window(d, 1, ["size", "city"], 100, score_column="s", missing_token="__missing__")
    assert win.frame["city"].tolist() == [None] and np.isnan(win.frame["size"].astype(float)[0])
    assert win.frame["s"].tolist() == [12.5]
    assert live.read_window(tmp_path / "none", 1, ["size"], 10, score_column="s").frame.empty
