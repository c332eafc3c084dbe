"""Platform-wide settings: storage, serving, UI, scale-out, and the Settings root."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Optional

from pydantic import Field, PrivateAttr, field_validator, model_validator

from ml_platform.settings.base import DEFAULT_CONFIG_NAME, MODEL_NAME, StrictModel
from ml_platform.settings.model import ModelConfig


class ServingConfig(StrictModel):
    host: str = Field(
        "127.0.0.1", description="Endpoint address. Off loopback (`0.0.0.0`), `/admin/reload` needs the admin token."
    )
    port: int = Field(8080, ge=0, le=65535, description="Endpoint port.")
    workers: int = Field(1, ge=1, description="Uvicorn worker processes; all poll the same champion pointer.")
    admin_token: Optional[str] = Field(
        None,
        description="Bearer token for `/admin/*`, required when the endpoint is not on loopback. Not set there: "
        "`ml-platform serve` uses (and creates once, mode 0600) `storage_dir/secrets/admin_token` and prints only "
        "its path.",
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Request size limit (413 above).")
    poll_seconds: float = Field(1.0, gt=0, description="How often workers look for a new champion.")
    sample_rows_per_second: float = Field(
        100.0,
        ge=0,
        description="Live sample (`storage_dir/live_samples/<model>/*.jsonl`, read by the `live_drift` asset): at "
        "most this many scored rows per second per worker; `0` turns it off.",
    )
    sample_max_mb: float = Field(
        256.0, gt=0, description="Live sample disk cap per model; the oldest sample files are deleted first."
    )
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="A request's line and headers must arrive within this, else 408 and close."
    )
    body_timeout_seconds: float = Field(
        30.0, gt=0, description="A request's body must arrive within this after its headers, else 408 and close."
    )
    keep_alive_seconds: float = Field(5.0, gt=0, description="Idle keep-alive connections are closed after this.")
    max_connections: int = Field(1000, ge=1, description="Open connections per worker; beyond it, a 503 and close.")


class UIConfig(StrictModel):
    host: str = Field("127.0.0.1", description="Dagster UI address for `ml-platform up`.")
    port: int = Field(3000, ge=0, le=65535, description="Dagster UI port for `ml-platform up`.")


class PostgresConfig(StrictModel):
    """One PostgreSQL server for Dagster's run / event-log / schedule storage and MLflow's
    backend store (two databases). The password is never a config value: it is read from an
    environment variable or a file (ml_platform/runtime/scale_out.py), never written anywhere."""

    host: str = Field("127.0.0.1", description="The PostgreSQL server.")
    port: int = Field(5432, ge=1, le=65535, description="Its port.")
    user: str = Field("ml_platform", description="The role the platform logs in as; it owns both databases.")
    password_env: Optional[str] = Field(
        None,
        description="Name of the environment variable holding the password (it must be set); never the password "
        "itself.",
    )
    password_file: Optional[str] = Field(
        None,
        description="Or a readable file holding it (relative to this config file). Neither: libpq's own "
        "`PGPASSWORD` / `.pgpass`.",
    )
    dagster_db: str = Field("dagster", description="Dagster's database (runs, event log, schedules); created by you.")
    mlflow_db: str = Field("mlflow", description="MLflow's backend-store database; created by you.")

    @model_validator(mode="after")
    def _one_password_source(self):
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("@password_file: give either password_env or password_file, not both")
        if self.password_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.password_env):
            raise ValueError("@password_env: expected the name of an environment variable")
        return self


class CeleryConfig(StrictModel):
    """Runs execute on Celery workers (`ml-platform worker`), queued through this broker."""

    broker_url: str = Field(
        description="`redis://host:port/db`, `rediss://...` or `amqp://user@host//`. No password in it: the URL is "
        "written to the instance's files; a broker that needs one is reached through `CELERY_BROKER_URL` "
        "(docs/scale-out.md)."
    )
    backend_url: Optional[str] = Field(
        None,
        description="Celery result backend, same rules (`CELERY_RESULT_BACKEND` for a password). Not set: the broker.",
    )

    @field_validator("broker_url", "backend_url")
    @classmethod
    def _url(cls, v):
        if v is None:
            return v
        if not re.match(r"(redis|rediss|amqp|pyamqp)://", v):
            raise ValueError("expected a redis://, rediss:// or amqp:// URL")
        if re.match(r"[a-z]+://[^/@]*:[^/@]*@", v):
            # the URL is written into dagster.yaml and shown in the UI: no secret in it
            raise ValueError("expected a URL without a password (it would be written to the instance's files)")
        return v


class ScaleOutConfig(StrictModel):
    postgres: Optional[PostgresConfig] = Field(
        None,
        description="Dagster's storage and MLflow's backend store on one PostgreSQL server (two databases). Not "
        "set: SQLite under `storage_dir`.",
    )
    celery: Optional[CeleryConfig] = Field(
        None,
        description="Runs execute on Celery workers (`ml-platform worker`); needs `scale_out.postgres`. Not set: "
        "runs execute in processes of the machine that runs `up`.",
    )

    @model_validator(mode="after")
    def _celery_needs_postgres(self):
        if self.celery is not None and self.postgres is None:
            raise ValueError("@celery: Celery workers need the shared PostgreSQL storage (scale_out.postgres)")
        return self


class Settings(StrictModel):
    storage_dir: str = Field(
        ".ml_platform", description="All platform state (docs/state-and-failure.md); relative to the config file."
    )
    serving: ServingConfig = Field(
        default_factory=ServingConfig, description="The endpoint (`ml-platform serve`, started by `up`)."
    )
    ui: UIConfig = Field(default_factory=UIConfig, description="The Dagster UI that `ml-platform up` starts.")
    scale_out: ScaleOutConfig = Field(
        default_factory=ScaleOutConfig,
        description="PostgreSQL storage and Celery workers (docs/scale-out.md). Not set: SQLite and runs on one "
        "machine.",
    )
    models: dict[str, ModelConfig] = Field(
        description="One asset chain and one endpoint route per model, at least one. A name is 1-64 ASCII "
        "letters, digits and `_`, starting with a letter (it becomes a Dagster asset key prefix and a URL path)."
    )

    _base_dir: Path = PrivateAttr(default=Path("."))
    _source: Path = PrivateAttr(default=Path(DEFAULT_CONFIG_NAME))
    _project: Optional[Path] = PrivateAttr(default=None)  # the dg project the models come from, if any
    _component_files: dict = PrivateAttr(default_factory=dict)  # model name -> its defs.yaml

    _warnings: list = PrivateAttr(default_factory=list)

    @field_validator("models")
    @classmethod
    def _names(cls, models: dict):
        if not models:
            raise ValueError("at least one model is required")
        for name in models:
            if not MODEL_NAME.fullmatch(name):
                shown = repr(name) if len(name) <= 40 else repr(name[:37] + "...")
                raise ValueError(
                    f"model name {shown} ({len(name)} characters): expected 1-64 ASCII letters, "
                    "digits and '_', starting with a letter (it becomes a Dagster asset key "
                    "prefix and a URL path)"
                )
        return models

    @property
    def warnings(self) -> tuple[str, ...]:
        """Problems that do not stop the platform but deserve a line at start (the CLI prints
        them), e.g. two models sharing a landing dir, or a landing dir not created yet."""
        return tuple(self._warnings)

    # ---- resolved paths: every piece of platform state lives under storage_dir ----
    @property
    def source(self) -> Path:
        return self._source

    def with_model(self, name: str, cfg: ModelConfig) -> Settings:
        """These settings plus one model (a ModelComponent the project's files do not declare)."""
        out = self.model_copy(update={"models": {**self.models, name: cfg}})
        out._base_dir, out._source, out._project = self._base_dir, self._source, self._project
        out._component_files, out._warnings = dict(self._component_files), list(self._warnings)
        return out

    def origin(self, model: str) -> str:
        """Where a model's keys are written, to start an error message: ``<file>: models.<name>``
        or ``<defs.yaml>: attributes``."""
        f = self._component_files.get(model)
        return f"{f}: attributes" if f is not None else f"{self._source}: {self.keys_of(model)}"

    def keys_of(self, model: str) -> str:
        """A model's keys in a short form for messages repeated per row or per file (a quarantine
        reason, a batch's failure): ``models.<name>``, or ``<defs.yaml, from the project>: attributes``
        for a ModelComponent."""
        f = self._component_files.get(model)
        if f is None:
            return f"models.{model}"
        try:
            f = Path(f).relative_to(self._project) if self._project is not None else f
        except ValueError:
            pass
        return f"{f}: attributes"

    @property
    def project(self) -> Optional[Path]:
        """The `dg` project directory whose ModelComponents these models are, or None."""
        return self._project

    @cached_property
    def storage(self) -> Path:
        return (self._base_dir / self.storage_dir).resolve()

    @property
    def dagster_home(self) -> Path:
        return self.storage / "dagster_home"

    @property
    def tracking_uri(self) -> str:
        pg = self.scale_out.postgres
        if pg is not None:  # no password in the URI: libpq reads PGPASSWORD (scale_out.export_password)
            return f"postgresql+psycopg2://{pg.user}@{pg.host}:{pg.port}/{pg.mlflow_db}"
        return f"sqlite:///{self.storage / 'mlflow' / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.storage / "mlflow" / "artifacts"

    @property
    def serving_dir(self) -> Path:
        return self.storage / "serving"

    @property
    def live_samples_dir(self) -> Path:
        """The endpoint's live sample: ``<model>/live-*.jsonl`` (``serving/sample.py``)."""
        return self.storage / "live_samples"

    @property
    def endpoint_url(self) -> str:
        host = "127.0.0.1" if self.serving.host in ("0.0.0.0", "") else self.serving.host
        return f"http://{host}:{self.serving.port}"

    def model_dir(self, name: str) -> Path:
        return self.storage / "models" / name

    def landing_dir(self, name: str) -> Path | None:
        """The model's landing zone, or None when its batches come from an asset (``source``)."""
        d = self.models[name].landing_dir
        return None if d is None else (self._base_dir / d).resolve()
