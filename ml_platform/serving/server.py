"""Run the endpoint under uvicorn: ``python -m ml_platform.serving --config PATH``.

Workers are started by uvicorn from an import string + factory (:func:`app_factory`),
so ``workers > 1`` works; the config path travels in ``$ML_PLATFORM_CONFIG`` and the
admin token in ``$ML_PLATFORM_ADMIN_TOKEN`` (``serving/auth.py`` says where it comes from:
the config, else the 0600 token file under storage_dir; it is never printed or logged).

Every timeout and limit is read from ``serving.*`` (``settings.ServingConfig``, where its
default is): the app's body limits, the protocol's read deadlines and connection cap, and
uvicorn's keep-alive.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import os
import sys

from ml_platform.settings import CONFIG_ENV, Settings, load_settings

TOKEN_ENV = "ML_PLATFORM_ADMIN_TOKEN"
FACTORY = "ml_platform.serving.server:app_factory"


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def configure_protocol(settings: Settings) -> None:
    """Give the httptools protocol (``serving/protocol.py``) its read timeouts and connection
    cap; called in every worker process before it serves."""
    if importlib.util.find_spec("httptools") is None:
        return
    from ml_platform.serving.protocol import HttpToolsCorked

    s = settings.serving
    HttpToolsCorked.configure(s.header_timeout_seconds, s.body_timeout_seconds, s.max_connections)


def build_app(settings: Settings, admin_token: str | None = None):
    from ml_platform.serving.app import create_app

    s = settings.serving
    return create_app(
        settings.serving_dir,
        list(settings.models),
        admin_token=admin_token or s.admin_token,
        max_body_bytes=s.max_body_bytes,
        poll_seconds=s.poll_seconds,
        sample_dir=settings.live_samples_dir if s.sample_rows_per_second > 0 else None,
        sample_rows_per_second=s.sample_rows_per_second,
        sample_max_bytes=int(s.sample_max_mb * 1024 * 1024),
        latency_budget_ms=None,  # each version is held to its own gate's budget
        body_timeout_seconds=s.body_timeout_seconds,
        stage_dir=settings.live_samples_dir,  # a staged candidate's evidence (serving/staging.py)
    )


def app_factory():
    """uvicorn factory (one call per worker process)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    configure_protocol(settings)
    return build_app(settings, os.environ.get(TOKEN_ENV) or None)


def run(settings: Settings, host: str | None = None, port: int | None = None, workers: int | None = None) -> None:
    import uvicorn

    host = host or settings.serving.host
    port = settings.serving.port if port is None else port
    workers = workers or settings.serving.workers
    os.environ[CONFIG_ENV] = str(settings.source)
    token = settings.serving.admin_token or None
    if not is_loopback(host) and not token:
        from ml_platform.serving.auth import ensure_admin_token, token_path

        token = ensure_admin_token(settings)  # the token file's, created (0600) when missing
        where = token_path(settings.storage)
        print(f"ml_platform endpoint on {host}: admin token for POST /admin/reload in {where}", flush=True)
    if token:
        os.environ[TOKEN_ENV] = token
    else:
        os.environ.pop(TOKEN_ENV, None)
    have = lambda mod: importlib.util.find_spec(mod) is not None  # noqa: E731
    uvicorn.run(
        FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop" if have("uvloop") else "asyncio",
        # httptools with one send() per response (see serving/protocol.py)
        http="ml_platform.serving.protocol:HttpToolsCorked" if have("httptools") else "h11",
        # no X-Forwarded-* rewriting: nothing here reads the client address or scheme, and
        # the middleware runs on every request
        proxy_headers=False,
        access_log=False,
        log_level="info",
        lifespan="on",
        timeout_graceful_shutdown=10,
        # idle keep-alive connections close after this; a request's headers and body have
        # their own deadlines (serving/protocol.py), and at most max_connections per worker
        timeout_keep_alive=settings.serving.keep_alive_seconds,
        limit_concurrency=settings.serving.max_connections + 1,  # uvicorn answers 503 from this many on
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    from ml_platform.settings import ConfigError

    ap = argparse.ArgumentParser(
        prog="python -m ml_platform.serving", description="Serve the champion models over HTTP (ONNX Runtime)."
    )
    ap.add_argument("--config", help=f"ml_platform.yaml (default: ${CONFIG_ENV} or ./ml_platform.yaml)")
    ap.add_argument("--host", help="bind address (default: serving.host)")
    ap.add_argument("--port", type=int, help="port (default: serving.port)")
    ap.add_argument("--workers", type=int, help="worker processes (default: serving.workers)")
    args = ap.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run(settings, host=args.host, port=args.port, workers=args.workers)
    return 0
