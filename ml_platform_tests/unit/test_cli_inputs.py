"""Command-line arguments and odd files as users give them (issue 20, the smaller list): each
refused in one line naming what was wrong, exit non-zero, no traceback."""

import pytest

from ml_platform.cli.main import main
from ml_platform.core.landing import BatchReadError, read_batch


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--drift", "nan"], "must be a finite number"),
        (["--drift", "inf"], "must be a finite number"),
        (["--batches", "-1"], "-1: must be at least 0"),
        (["--rows", "0"], "0: must be at least 1"),
        (["--batches", "two"], "'two' is not a whole number"),
    ],
)
def test_simulate_refuses_bad_numbers(config_dir, capsys, args, says):
    with pytest.raises(SystemExit) as e:
        main(["--config", str(config_dir / "ml_platform.yaml"), "simulate", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_a_semicolon_separated_file_is_refused_with_a_hint(tmp_path):
    p = tmp_path / "b.csv"
    p.write_text("customer_id;tenure_months;churned\n1;3;0\n2;4;1\n")
    with pytest.raises(BatchReadError, match="looks ';'-separated; batches are comma-separated CSV"):
        read_batch(p)


def test_score_refuses_an_output_that_is_not_parquet(config_dir, capsys, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("customer_id,tenure_months\n1,3\n")
    rc = main(["--config", str(config_dir / "ml_platform.yaml"), "score", str(src), "--out", str(tmp_path / "x.csv")])
    assert rc == 1
    assert "predictions are written as Parquet: name a .parquet (or .pq) file" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
    # a directory that does not exist is refused, not created (a typo is not a new directory)
    out = tmp_path / "nodir" / "o.parquet"
    assert main(["--config", str(config_dir / "ml_platform.yaml"), "score", str(src), "--out", str(out)]) == 1
    assert f"the directory {out.parent} does not exist: create it first" in capsys.readouterr().err
    assert not out.parent.exists()


def test_exclude_needs_a_reason_and_is_idempotent(settings, config_dir, capsys):
    """D14: `exclude` without --reason is refused in one line; excluding twice (or undoing a batch
    in training) says nothing changed, exit 0, one audit entry."""
    from ml_platform.core import audit, catalog

    d = settings.model_dir("churn")
    catalog.update_record(d, "a.csv-11111111", file="/landing/a.csv", arrival=1.0, status="validated", labelled=True)
    cfg = str(config_dir / "ml_platform.yaml")
    for reason in ([], ["--reason", "  "]):
        assert main(["--config", cfg, "exclude", "--batch", "a.csv", *reason]) == 1
        err = capsys.readouterr().err
        assert err == "exclude failed: --reason is required: say why the batch leaves training (it goes in the audit)\n"
    assert catalog.read_record(d, "a.csv-11111111").excluded is None and audit.read(d) == []
    assert main(["--config", cfg, "exclude", "--batch", "a.csv", "--undo"]) == 0
    assert "batch a.csv-11111111 is in training already: nothing changed" in capsys.readouterr().out
    assert main(["--config", cfg, "exclude", "--batch", "a.csv", "--reason", "labels shifted", "--by", "ann"]) == 0
    capsys.readouterr()
    assert main(["--config", cfg, "exclude", "--batch", "a.csv", "--reason", "again"]) == 0
    out = capsys.readouterr()
    assert "batch a.csv-11111111 is already out of training (since " in out.out and "by ann: labels shifted)" in out.out
    assert "nothing changed" in out.out and "Traceback" not in out.err
    assert [e.kind for e in audit.read(d)] == ["exclude"]
    assert catalog.read_record(d, "a.csv-11111111").excluded["reason"] == "labels shifted"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--port", "99999"], "99999: a TCP port is at most 65535"),
        (["--port", "-1"], "-1: must be at least 1"),
        (["--port", "http"], "'http' is not a whole number"),
        (["--workers", "0"], "0: must be at least 1"),
    ],
)
def test_serve_refuses_a_port_that_cannot_be(config_dir, capsys, args, says):
    """D15: refused by the argument parser, before anything starts."""
    with pytest.raises(SystemExit) as e:
        main(["--config", str(config_dir / "ml_platform.yaml"), "serve", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


CONFIG = """\
models:
  churn:
    landing_dir: landing
    target: y
    task: classification
    features:
"""


@pytest.mark.parametrize(
    ("features", "says"),
    [
        ('      "": {type: numeric}\n', "models.churn.features: a feature name is empty"),
        ('      "  ": {type: numeric}\n', "models.churn.features: a feature name is empty"),
        (
            '      "caf\\u00e9": {type: numeric}\n      "cafe\\u0301": {type: numeric}\n',
            "models.churn.features: 'caf\u00e9' and 'cafe\u0301' are the same name once Unicode-normalized (NFC) "
            "(caf\\xe9 vs cafe\\u0301): keep one spelling",
        ),
        (
            "      plan: {type: categorical, values: []}\n",
            "models.churn.features.plan.values: an empty list allows no category at all",
        ),
        (  # D6: the quarantine file's own column (also _ts, _version, _prediction of the live sample...)
            "      _reason: {type: categorical}\n",
            "models.churn.features._reason: '_reason' is a column name the platform writes itself (reserved: "
            "_row, _reason, _batch, _holdout, __score__, _ts, _version, _prediction, _probabilities, _rid, _id, "
            "_error): rename the column",
        ),
        (
            "      age: {type: numeric}\n    id_column: _ts\n",
            "models.churn.id_column: '_ts' is a column name the platform writes itself",
        ),
    ],
)
def test_feature_names_and_values_that_cannot_work_are_refused_at_load(tmp_path, capsys, features, says):
    """D15: one line naming the key, exit 2."""
    (tmp_path / "landing").mkdir()
    p = tmp_path / "ml_platform.yaml"
    p.write_text(CONFIG + features)
    assert main(["--config", str(p), "status"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "Traceback" not in err, err


def test_config_names_are_read_in_one_unicode_spelling(tmp_path):
    """D7: a feature (and a slice, the target) typed decomposed (NFD) in the config is the NFC name
    every input edge uses (batch headers, `score`, endpoint requests: test_user_inputs)."""
    import unicodedata

    from ml_platform.settings import load_settings

    nfd = unicodedata.normalize("NFD", "caf\u00e9")
    (tmp_path / "landing").mkdir()
    p = tmp_path / "ml_platform.yaml"
    p.write_text(
        CONFIG.replace("target: y", f"target: {nfd}_y")
        + f"      {nfd}: {{type: categorical}}\n"
        + f"    gate: {{slices: [{{feature: {nfd}, threshold: 0.5}}]}}\n"
    )
    cfg = load_settings(p).models["churn"]
    assert list(cfg.features) == ["caf\u00e9"] and cfg.target == "caf\u00e9_y"
    assert cfg.gate.slices[0].feature == "caf\u00e9"
