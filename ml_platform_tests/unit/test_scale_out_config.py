"""scale_out keys: validated at load with their key path; the generated dagster.yaml puts storage on
PostgreSQL and runs on Celery, and holds the password only as an environment-variable reference."""

import pytest
import yaml

from ml_platform.runtime import scale_out
from ml_platform.runtime.instance import dagster_yaml, prepare_environment
from ml_platform.settings import ConfigError, load_settings
from ml_platform_tests.conftest import write_config

SECRET = "s3cret-value-never-in-files"


def _config(tmp_path, block: str):
    cfg = write_config(tmp_path)
    with cfg.open("a") as f:
        f.write(block)
    return cfg


def test_default_is_embedded(tmp_path):
    s = load_settings(write_config(tmp_path))
    doc = dagster_yaml(s)
    assert s.tracking_uri.startswith("sqlite:///")
    # run workers forked from a preloaded forkserver (runtime/run_launcher.py)
    assert doc["run_launcher"] == {"module": "ml_platform.runtime.run_launcher", "class": "ForkingRunLauncher"}
    # Dagster's SQLite files in the instance's folder (runtime/sqlite_storage.py)
    assert doc["storage"]["custom"]["config"] == {"base_dir": str(s.dagster_home)}
    # one machine: the landing sensor's ingest runs go one at a time (time to recovery, 3 files)
    assert doc["concurrency"]["runs"]["tag_concurrency_limits"] == [{"key": "ml_platform/sha256", "limit": 1}]


def test_postgres_and_celery_in_dagster_yaml_password_by_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_PG_PW", SECRET)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    cfg = _config(
        tmp_path,
        "scale_out:\n  postgres: {host: db.internal, port: 5433, user: mlp, password_env: MY_PG_PW}\n"
        "  celery: {broker_url: 'redis://broker:6379/0'}\n",
    )
    s = load_settings(cfg)
    assert s.tracking_uri == "postgresql+psycopg2://mlp@db.internal:5433/mlflow"
    prepare_environment(s)
    text = (s.dagster_home / "dagster.yaml").read_text()
    doc = yaml.safe_load(text)
    db = doc["storage"]["postgres"]["postgres_db"]
    assert db["password"] == {"env": "MY_PG_PW"} and db["db_name"] == "dagster" and db["port"] == 5433
    assert doc["run_launcher"]["class"] == "CeleryRunLauncher"
    assert "tag_concurrency_limits" not in doc["concurrency"]["runs"]  # workers: as many ingests as they take
    assert doc["run_launcher"]["config"]["broker"] == "redis://broker:6379/0"
    assert SECRET not in text and SECRET not in (tmp_path / ".env").read_text()
    import os

    assert os.environ["PGPASSWORD"] == SECRET  # libpq (MLflow) reads it from the environment only


def test_password_file(tmp_path, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    (tmp_path / "pg.pw").write_text(SECRET + "\n")
    s = load_settings(_config(tmp_path, "scale_out:\n  postgres: {password_file: pg.pw}\n"))
    assert scale_out.password(s) == SECRET
    assert scale_out.storage_section(s)["postgres"]["postgres_db"]["password"] == {"env": "PGPASSWORD"}


@pytest.mark.parametrize(
    "block, message",
    [
        (
            "scale_out:\n  celery: {broker_url: 'redis://h:6379/0'}\n",
            "scale_out.celery: Celery workers need the shared PostgreSQL storage",
        ),
        (
            "scale_out:\n  postgres: {password_env: NOT_SET_ANYWHERE_42}\n",
            "scale_out.postgres.password_env: environment variable NOT_SET_ANYWHERE_42 is not set",
        ),
        (
            "scale_out:\n  postgres: {password_file: missing.pw}\n",
            "scale_out.postgres.password_file: expected a readable file",
        ),
        (
            "scale_out:\n  postgres: {}\n  celery: {broker_url: 'redis://:hunter2@h:6379/0'}\n",
            "scale_out.celery.broker_url: expected a URL without a password",
        ),
        (
            "scale_out:\n  postgres: {}\n  celery: {broker_url: 'http://h'}\n",
            "scale_out.celery.broker_url: expected a redis://",
        ),
        ("scale_out:\n  postgres: {password: x}\n", "scale_out.postgres.password: unknown key"),
    ],
)
def test_bad_keys_fail_at_load_with_key_path(tmp_path, block, message):
    with pytest.raises(ConfigError) as e:
        load_settings(_config(tmp_path, block))
    assert message in str(e.value), str(e.value)
    assert "hunter2" not in str(e.value)
