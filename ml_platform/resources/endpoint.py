"""Talking to a running `ml-platform serve`: reload a model now, send a smoke request."""

from __future__ import annotations

from typing import Optional

import httpx
from dagster import ConfigurableResource

from ml_platform.resources.errors import EndpointUnavailable  # noqa: F401 - re-exported


class EndpointClient(ConfigurableResource):
    """The token is read at call time (``serving/auth.py``: the config, else the 0600 token
    file under storage_dir), so it never enters the resource's config, the run config or
    the Dagster snapshot: they only carry the config file's path."""

    url: str
    config_path: Optional[str] = None
    timeout_seconds: float = 10.0

    def _headers(self) -> dict:
        if not self.config_path:
            return {}
        from ml_platform.serving.auth import read_admin_token
        from ml_platform.settings import load_settings

        token = read_admin_token(load_settings(self.config_path))
        return {"Authorization": f"Bearer {token}"} if token else {}

    def reload(self, model: str) -> dict:
        """The endpoint's verdict for ``model``: {"version", "status", "reason"}.
        Raises EndpointUnavailable when nothing listens."""
        try:
            r = httpx.post(
                f"{self.url}/admin/reload",
                params={"model": model},
                headers=self._headers(),
                timeout=self.timeout_seconds,
            )
        except httpx.TransportError as e:
            raise EndpointUnavailable(f"endpoint {self.url} not reachable: {e}") from None
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code >= 400:
            return {"status": "error", "reason": f"HTTP {r.status_code}: {body or r.text[:200]}"}
        models = body.get("models", body)
        return models.get(model, {"status": "error", "reason": f"no entry for {model} in {body}"})

    def smoke(self, model: str, rows: list[dict], expect_version: int) -> tuple[bool, str]:
        try:
            # marked as smoke (with the admin token, when there is one): answered like any request,
            # kept out of the live sample that live_drift judges
            r = httpx.post(
                f"{self.url}/models/{model}/invocations",
                json={"dataframe_records": rows},
                headers={"X-ML-Platform-Smoke": "1", **self._headers()},
                timeout=self.timeout_seconds,
            )
        except httpx.TransportError as e:
            return False, f"smoke request failed: {e}"
        served = r.headers.get("x-model-version")
        if r.status_code != 200:
            return False, f"smoke request got HTTP {r.status_code}: {r.text[:300]}"
        preds = r.json().get("predictions", [])
        if len(preds) != len(rows):
            return False, f"smoke request returned {len(preds)} predictions for {len(rows)} rows"
        if served != str(expect_version):
            return False, f"endpoint serves version {served}, expected {expect_version}"
        return True, f"{len(rows)} smoke rows answered by v{served}"


def endpoint_for(settings) -> EndpointClient:
    return EndpointClient(url=settings.endpoint_url, config_path=str(settings.source))
