import os
import textwrap

import pytest

from ml_platform.settings import ESTIMATOR_PARAMS, ConfigError, cron_problem, load_settings
from ml_platform_tests.conftest import write_config


def _load_with(tmp_path, text):
    p = tmp_path / "ml_platform.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    return str(e.value)


BASE = """
models:
  churn:
    landing_dir: landing
    target: y
    task: classification
    features:
      a: {type: numeric}
"""


def test_committed_config_loads_with_defaults():
    s = load_settings("ml_platform.yaml")
    churn = s.models["churn"]
    assert churn.gate_metric == "roc_auc" and churn.gate_threshold == 0.7
    assert s.serving.host == "127.0.0.1"
    assert s.storage.name == ".ml_platform" and s.tracking_uri.startswith("sqlite:///")


def test_paths_are_relative_to_the_config_file(config_dir):
    s = load_settings(config_dir / "ml_platform.yaml")
    assert s.storage == (config_dir / "state").resolve()
    assert s.landing_dir("churn") == (config_dir / "landing").resolve()


def test_unknown_key_names_its_path(tmp_path):
    msg = _load_with(tmp_path, BASE.replace("task: classification", "task: classification\n    colour: red"))
    assert "models.churn.colour: unknown key" in msg and str(tmp_path) in msg


def test_wrong_type_names_path_and_expectation(tmp_path):
    msg = _load_with(tmp_path, BASE.replace("{type: numeric}", "{type: int}"))
    assert "models.churn.features.a.type" in msg and "'numeric', 'categorical' or 'boolean'" in msg
    assert "'int'" in msg


def test_missing_target(tmp_path):
    msg = _load_with(tmp_path, BASE.replace("    target: y\n", ""))
    assert "models.churn.target: required key is missing" in msg


def test_no_models_says_where_models_come_from(tmp_path):
    # a dg project's platform-wide file (models are its ModelComponents) given as --config
    msg = _load_with(tmp_path, "storage_dir: state\n")
    assert "models: required key is missing: add a models: block, or use --project DIR" in msg, msg


def test_target_listed_as_feature(tmp_path):
    msg = _load_with(tmp_path, BASE.replace("target: y", "target: a"))
    assert "target 'a' must not also be listed under features" in msg


def test_wrong_value_type_for_number(tmp_path):
    msg = _load_with(tmp_path, BASE + "    training: {holdout_fraction: lots}\n")
    assert "models.churn.training.holdout_fraction" in msg and "'lots'" in msg


def test_metric_of_the_wrong_task(tmp_path):
    msg = _load_with(tmp_path, BASE + "    gate: {metric: rmse}\n")
    assert "regression metric" in msg


def test_invalid_yaml_and_missing_file(tmp_path):
    assert "not valid YAML" in _load_with(tmp_path, "models: [unclosed")
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_test_config_helper_is_valid(tmp_path):
    write_config(tmp_path, extra="training: {window_batches: 1}\n")
    assert load_settings(tmp_path / "ml_platform.yaml").models["churn"].training.window_batches == 1


# ---- issue 9: every bad configuration fails at load, one line naming the key path ----


def _one_line(msg: str, path: str) -> None:
    assert "\n" not in msg and f"invalid configuration: {path}: " in msg, msg


def test_a_single_problem_is_one_line(tmp_path):
    msg = _load_with(tmp_path, BASE + "    gate: {threshold: .nan}\n")
    _one_line(msg, "models.churn.gate.threshold")
    assert "expected a finite number" in msg


@pytest.mark.parametrize(
    "key,value",
    [
        ("gate", "{threshold: .nan}"),
        ("gate", "{threshold: .inf}"),
        ("gate", "{max_regression: -.inf}"),
        ("drift", "{drifted_share: .nan}"),
        ("gate", "{parity_rtol: .nan}"),
    ],
)
def test_nan_and_inf_floats_are_refused(tmp_path, key, value):
    msg = _load_with(tmp_path, BASE + f"    {key}: {value}\n")
    assert f"models.churn.{key}." in msg and "finite number" in msg


def test_nan_feature_bound(tmp_path):
    msg = _load_with(tmp_path, BASE.replace("{type: numeric}", "{type: numeric, min: .nan}"))
    _one_line(msg, "models.churn.features.a.min")


def test_landing_dir_that_is_a_file(tmp_path):
    (tmp_path / "landing").write_text("not a dir")
    msg = _load_with(tmp_path, BASE)
    _one_line(msg, "models.churn.landing_dir")
    assert "is a file" in msg


def test_landing_dir_below_a_file_cannot_be_created(tmp_path):
    (tmp_path / "data").write_text("x")
    msg = _load_with(tmp_path, BASE.replace("landing_dir: landing", "landing_dir: data/landing/churn"))
    _one_line(msg, "models.churn.landing_dir")
    assert "cannot be created" in msg


def test_missing_landing_dir_is_a_warning_not_an_error(tmp_path):
    """`make up` on a fresh clone: data/landing/churn does not exist until `up` seeds it."""
    p = tmp_path / "ml_platform.yaml"
    p.write_text(BASE.replace("landing_dir: landing", "landing_dir: data/landing/churn"))
    s = load_settings(p)
    assert len(s.warnings) == 1 and s.warnings[0].startswith("models.churn.landing_dir: ")
    assert "does not exist yet" in s.warnings[0]
    (tmp_path / "data" / "landing" / "churn").mkdir(parents=True)
    assert load_settings(p).warnings == ()


def test_up_does_not_warn_about_the_landing_dir_it_just_seeded(tmp_path, capsys):
    """`up` loads the settings, writes the demo batches, then prints the warnings that still hold."""
    from ml_platform.cli.common import print_warnings

    p = tmp_path / "ml_platform.yaml"
    p.write_text(BASE.replace("landing_dir: landing", "landing_dir: data/landing/churn"))
    s = load_settings(p)
    print_warnings(s)
    assert "does not exist yet" in capsys.readouterr().err
    (tmp_path / "data" / "landing" / "churn").mkdir(parents=True)  # what the demo seeding does
    print_warnings(s)
    assert capsys.readouterr().err == ""


def test_storage_dir_that_is_a_file(tmp_path):
    (tmp_path / "state").write_text("x")
    msg = _load_with(tmp_path, "storage_dir: state\n" + BASE)
    _one_line(msg, "storage_dir")
    assert "writable directory" in msg and "is a file" in msg


def test_storage_dir_that_cannot_be_written(tmp_path, monkeypatch):
    """Was a PermissionError traceback at the first write; now a config error at load.
    (Root may write anywhere, so the permission answer is stubbed for this path.)"""
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, m, **kw: False if str(p).startswith(str(locked)) and m & os.W_OK else real(p, m, **kw)
    )
    msg = _load_with(tmp_path, "storage_dir: locked/state\n" + BASE)
    _one_line(msg, "storage_dir")
    assert "cannot be created" in msg and "not writable" in msg
    msg = _load_with(tmp_path, "storage_dir: locked\n" + BASE)
    assert "storage_dir: expected a writable directory" in msg and "permission denied" in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permissions")
def test_storage_dir_read_only_for_real(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert "storage_dir" in _load_with(tmp_path, "storage_dir: locked/state\n" + BASE)
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("name", ["modèle", "ﾁｬｰﾝ", "x" * 300, "1churn", "churn-model", "_x"])
def test_model_names_are_short_ascii_identifiers(tmp_path, name):
    msg = _load_with(tmp_path, BASE.replace("  churn:", f"  {name}:"))
    _one_line(msg, "models")
    assert "1-64 ASCII letters" in msg and len(msg) < 400  # a 300-character name is cut short


def test_a_64_character_model_name_is_fine(tmp_path):
    p = tmp_path / "ml_platform.yaml"
    p.write_text(BASE.replace("  churn:", "  " + "m" * 64 + ":"))
    assert list(load_settings(p).models) == ["m" * 64]


@pytest.mark.parametrize(
    "cron,problem",
    [
        ("every monday", "5 fields"),
        ("61 3 * * 1", "minute field '61'"),
        ("0 3 * * 1 2", "5 fields"),
        ("0 25 * * *", "outside 0-23"),
        ("0 0 30 2 *", "February"),
        ("*/0 * * * *", "step"),
    ],
)
def test_cron_that_does_not_parse(tmp_path, cron, problem):
    msg = _load_with(tmp_path, BASE + f"    retrain: {{schedule: '{cron}'}}\n")
    _one_line(msg, "models.churn.retrain.schedule")
    assert problem in msg


CRONS = [
    "0 3 * * 1",
    "@daily",
    "@hourly",
    "*/5 * * * *",
    "0 3 * * MON",
    "0 3 * * mon-fri",
    "0 0 1,15 * *",
    "0 0 L * *",
    "0 3 ? * 1",
    "0 0 * JAN-MAR *",
    "0 22-2 * * *",
    "0 0 * * 7",
    "0 0 * * SUN#1",
    "0 0 30,31 2 *",
    "15 10 1-31/2 * *",
    "H * * * *",
    "0 3 * * 8",
    "0 24 * * *",
    "* * * *",
    "",
    "0 0 30 2 *",
    "*/0 * * * *",
    "0 0 * * 5L",
    "0 0 15W * *",
    "a b c d e",
    "0 3 * * 1,",
    "60 * * * *",
]


@pytest.mark.parametrize("cron", CRONS)
def test_cron_check_agrees_with_dagster(cron):
    """settings checks cron strings without importing dagster (the endpoint loads settings);
    it must accept exactly what Dagster's schedules accept."""
    from dagster._utils.schedules import is_valid_cron_string

    assert (cron_problem(cron) is None) == is_valid_cron_string(cron)


def test_unknown_estimator_param(tmp_path):
    msg = _load_with(tmp_path, BASE + "    estimator: {params: {max_depht: 3, learning_rate: 0.1}}\n")
    _one_line(msg, "models.churn.estimator.params")
    assert "'max_depht'" in msg and "'learning_rate'" not in msg.split(";")[0] and "max_depth" in msg


def test_param_of_the_other_task_is_unknown(tmp_path):
    msg = _load_with(
        tmp_path,
        BASE.replace("task: classification", "task: regression")
        + "    estimator: {params: {class_weight: balanced}}\n",
    )
    assert "models.churn.estimator.params: unknown parameter(s) 'class_weight'" in msg


def test_known_estimator_params_load(tmp_path):
    p = tmp_path / "ml_platform.yaml"
    p.write_text(BASE + "    estimator: {name: random_forest, params: {n_estimators: 50, max_depth: 4}}\n")
    assert load_settings(p).models["churn"].estimator.params == {"n_estimators": 50, "max_depth": 4}


def test_estimator_param_table_matches_scikit_learn():
    from ml_platform.core.estimators import make_estimator
    from ml_platform.settings import ModelConfig

    for (name, task), keys in ESTIMATOR_PARAMS.items():
        cfg = ModelConfig.model_validate(
            {
                "landing_dir": "x",
                "target": "y",
                "task": task,
                "features": {"a": {"type": "numeric"}},
                "estimator": {"name": name},
            }
        )
        assert set(make_estimator(cfg.estimator, task, 0).get_params()) == keys, (name, task)


@pytest.mark.parametrize(
    "extra,path",
    [
        ("    id_column: y\n", "models.churn.id_column"),
        ("    timestamp_column: y\n", "models.churn.timestamp_column"),
        ("    id_column: k\n    timestamp_column: k\n", "models.churn.timestamp_column"),
    ],
)
def test_target_id_and_timestamp_must_differ(tmp_path, extra, path):
    msg = _load_with(tmp_path, BASE + extra)
    _one_line(msg, path)
    assert "expected a column other than" in msg


def test_two_models_sharing_a_landing_dir_is_a_warning(tmp_path):
    (tmp_path / "landing").mkdir()
    p = tmp_path / "ml_platform.yaml"
    p.write_text(
        BASE
        + textwrap.indent(
            textwrap.dedent("""\
        other:
          landing_dir: ./landing/
          target: y
          task: regression
          features:
            a: {type: numeric}
        """),
            "  ",
        )
    )
    s = load_settings(p)
    assert list(s.models) == ["churn", "other"]
    assert len(s.warnings) == 1
    assert "models.churn.landing_dir and models.other.landing_dir are the same directory" in s.warnings[0]


def test_boolean_feature_type_is_a_categorical_with_true_and_false(tmp_path):
    p = tmp_path / "ml_platform.yaml"
    p.write_text(
        BASE.replace("a: {type: numeric}", "a: {type: boolean}\n      b: {type: categorical, values: [true, false, 3]}")
    )
    feats = load_settings(p).models["churn"].features
    assert feats["a"].type == "categorical" and feats["a"].values == ["false", "true"]
    assert feats["b"].values == ["true", "false", 3]  # YAML booleans are the categories, not 1 / 0
    msg = _load_with(tmp_path, BASE.replace("a: {type: numeric}", "a: {type: boolean, values: [yes]}"))
    assert "models.churn.features.a.values: a boolean feature takes no values" in msg


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    from ml_platform.cli.main import main

    p = tmp_path / "ml_platform.yaml"
    p.write_text(BASE + "    retrain: {schedule: 'every monday'}\n")
    assert main(["--config", str(p), "status"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "models.churn.retrain.schedule: expected a cron string" in err
    assert "Traceback" not in err


def test_deploy_approval_is_auto_or_required(tmp_path):
    msg = _load_with(tmp_path, BASE + "    deploy: {approval: sometimes}\n")
    assert "models.churn.deploy.approval: expected 'auto' or 'required' (got 'sometimes')" in msg, msg
    p = tmp_path / "ok.yaml"
    p.write_text(BASE + "    deploy: {approval: required}\n")
    assert load_settings(p).models["churn"].deploy.approval == "required"
    p.write_text(BASE)
    assert load_settings(p).models["churn"].deploy.approval == "auto"
