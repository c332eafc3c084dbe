"""What every command shares: the settings it runs on, the model it names."""

from __future__ import annotations

import sys

from ml_platform.runtime.scale_out import export_password
from ml_platform.settings import Settings, load_settings


def settings_of(args) -> Settings:
    s = load_settings(args.config or getattr(args, "project", None))
    for w in s.warnings:
        print(f"warning: {w}", file=sys.stderr)
    export_password(s)  # scale_out.postgres: libpq (MLflow, Dagster) reads it from the environment only
    return s


def model_of(s: Settings, name: str | None) -> str:
    if name is None:
        if len(s.models) == 1:
            return next(iter(s.models))
        raise SystemExit(f"--model is required: configured models are {sorted(s.models)}")
    if name not in s.models:
        raise SystemExit(f"unknown model {name!r}: configured models are {sorted(s.models)} ({s.source})")
    return name
