import pytest

from ml_platform.settings import ConfigError, load_settings
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
    assert "models.churn.features.a.type" in msg and "'numeric' or 'categorical'" in msg and "'int'" in msg


def test_missing_target(tmp_path):
    msg = _load_with(tmp_path, BASE.replace("    target: y\n", ""))
    assert "models.churn.target: required key is missing" in msg


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
