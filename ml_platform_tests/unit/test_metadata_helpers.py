"""assets/common.py's metadata helpers: what a person reads in the UI."""

import dagster as dg
import numpy as np
import pandas as pd

from ml_platform.defs.metadata import VERDICT, bar, display_name, figures, plot, rounded, table


def test_table_has_a_schema_people_names_and_empty_cells_for_missing():
    df = pd.DataFrame(
        {
            "feature": ["age", "__score__"],
            "value": [0.1234567, np.nan],
            "rows": [3, 4],
            "drifted": [True, False],
            "__score__": [0.5, None],
            "at": [pd.Timestamp("2026-01-01"), pd.NaT],
        }
    )
    t = table(df)
    assert isinstance(t, dg.TableMetadataValue)
    assert [(c.name, c.type) for c in t.schema.columns] == [
        ("feature", "string"),
        ("value", "float"),
        ("rows", "int"),
        ("drifted", "bool"),
        ("model score", "float"),
        ("at", "string"),
    ]
    first, second = (r.data for r in t.records)
    assert first["value"] == 0.123457 and first["at"].startswith("2026-01-01")
    assert second["value"] is None and second["model score"] is None and second["at"] is None
    assert display_name("__score__") == "model score"


def test_table_says_how_many_rows_it_leaves_out_and_empty_is_text():
    t = table(pd.DataFrame({"n": range(5)}), max_rows=2)
    assert [r.data["n"] for r in t.records] == [0, 1, "… 3 more rows"]
    assert t.schema.columns[0].type == "string"
    empty = table(pd.DataFrame({"n": []}), empty="no rows quarantined")
    assert isinstance(empty, dg.TextMetadataValue) and empty.value == "no rows quarantined"


def test_bar_and_plot():
    assert bar(1.0) == "█████░░░░░ 1.00×"
    assert bar(10.0).startswith("██████████ ") and bar(0.0).startswith("░")
    assert bar(float("nan")) is None and bar(None) is None
    md = plot(b"\x89PNG fake", "drift per feature")
    assert isinstance(md, dg.MarkdownMetadataValue) and md.value.startswith(
        "![drift per feature](data:image/png;base64,"
    )


def test_figures_are_rounded_to_what_matters_and_labels_are_text():
    got = figures(
        {
            "holdout_roc_auc": 0.8355666666666667,
            "max_rel_diff": 0.00001737072018486921,
            "p99_ms": 0.13535633004153166,
            "concept_p_value": 0.0123456,
            "share_drifted": 0.44444,
            "rows": np.int64(600),
            "passed": np.bool_(True),
            "candidate_version": 2,
            "budget_ms": 50.0,
            "metric": "roc_auc",
        }
    )
    assert got["holdout_roc_auc"] == 0.8356 and got["max_rel_diff"] == 1.74e-05 and got["p99_ms"] == 0.135
    assert got["concept_p_value"] == 0.0123 and got["share_drifted"] == 0.444
    assert got["rows"] == 600 and type(got["rows"]) is int and got["passed"] is True and got["metric"] == "roc_auc"
    # identifiers and constants are text: the UI plots every numeric entry over time
    assert got["candidate_version"] == dg.MetadataValue.text("2") and got["budget_ms"] == dg.MetadataValue.text("50")
    assert rounded(12.3456, "ms") == 12.3 and rounded(float("nan")) != rounded(float("nan"))
    # the verdict key sorts before every lower-case key (the UI sorts a check's metadata by key)
    assert sorted(["reason", "candidate_version", VERDICT, "alpha"])[0] == VERDICT
