"""assets/common.py's metadata helpers: what a person reads in the UI."""

import dagster as dg
import numpy as np
import pandas as pd

from ml_platform.defs.metadata import bar, display_name, plot, table


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
