"""The endpoint's admin token: where it comes from, and the one check of a request's
``Authorization`` header against it (standard library only).

Order: ``serving.admin_token`` in the config, else the token file
``<storage_dir>/secrets/admin_token`` (mode 0600). ``ml-platform serve`` bound off loopback
creates that file when neither exists; the platform's deploy/rollback client reads it at
call time. The token itself never goes into logs, run config or Dagster resources: they
carry at most the file's path.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path


def token_path(storage: Path) -> Path:
    return Path(storage) / "secrets" / "admin_token"


def read_admin_token(settings) -> str | None:
    """The token a client must send, or None when the endpoint needs none."""
    if settings.serving.admin_token:
        return settings.serving.admin_token
    try:
        return token_path(settings.storage).read_text().strip() or None
    except FileNotFoundError:
        return None


def bearer_matches(authorization: bytes | None, token: str) -> bool:
    """Does the raw ``Authorization`` header value say ``Bearer <token>``? (The scheme is
    case-insensitive; the token is compared in constant time.)"""
    scheme, _, given = (authorization or b"").partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token.encode())


def ensure_admin_token(settings) -> str:
    """The configured token, else the token file's, created (0600) when missing."""
    existing = read_admin_token(settings)
    if existing:
        return existing
    path = token_path(settings.storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    token = secrets.token_urlsafe(32)
    try:  # O_EXCL: two servers starting together agree on the first one's token
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(token)
        f.flush()
        os.fsync(f.fileno())
    return token
