"""The endpoint as a real process: ``python -m ml_platform.serving --config ...`` on a free
loopback port, a hot swap under load without failed requests, a broken version rejected."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from ml_platform.core.export import onnx_predict, session
from ml_platform.serving import server
from ml_platform.serving.store import ModelStore
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import free_port
from ml_platform_tests.serving.conftest import CLF, CLF_CONFIG, publish, records

COLS = ["customer_id", "tenure", "charges", "plan", "region"]


def write_config(root: Path, port: int, **serving) -> Path:
    cfg = root / "ml_platform.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "storage_dir": "state",
                "serving": {"host": "127.0.0.1", "port": port, "poll_seconds": 0.2, **serving},
                "models": {CLF: CLF_CONFIG},
            }
        )
    )
    return cfg


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def wait_until(pred, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.e2e
def test_real_process_hot_swap(tmp_path, clf):
    port = free_port()
    cfg_path = write_config(tmp_path, port)
    settings = load_settings(cfg_path)
    store = ModelStore(settings.serving_dir)
    publish(store, CLF, clf, 1)
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ml_platform.serving", "--config", str(cfg_path), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=5) as http:

            def ready():
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                try:
                    return http.get("/v2/health/ready").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(ready, 30, "the endpoint to be ready")

            df = clf.frame.iloc[:30]
            resp = http.post(f"/models/{CLF}/invocations", json={"dataframe_records": records(df, COLS)})
            assert resp.status_code == 200 and resp.headers["x-model-version"] == "1"
            got = np.array([p["probabilities"]["1"] for p in resp.json()["predictions"]], dtype=np.float32)
            np.testing.assert_array_equal(got, onnx_predict(session(clf.onnx), df, clf.cfg)[:, 1])

            # a bounded request loop runs across both swaps
            seen, failures, stop_loop = [], [], threading.Event()
            row = {"dataframe_records": records(clf.frame.iloc[:1], COLS)}

            def loop():
                with httpx.Client(base_url=base, timeout=5) as c:
                    for _ in range(20_000):
                        if stop_loop.is_set():
                            return
                        try:
                            r = c.post(f"/models/{CLF}/invocations", json=row)
                            seen.append(r.headers.get("x-model-version"))
                            if r.status_code != 200:
                                failures.append(r.text)
                        except httpx.HTTPError as e:
                            failures.append(repr(e))

            t = threading.Thread(target=loop)
            t.start()
            try:
                wait_until(lambda: len(seen) > 20, 10, "traffic")
                publish(store, CLF, clf, 2)
                wait_until(lambda: seen and seen[-1] == "2", 5, "version 2 to serve")

                store.publish(CLF, 3, b"\x00 not an onnx graph", clf.meta_for(3))
                store.point(CLF, 3)
                rej = wait_until(
                    lambda: http.get(f"/v2/models/{CLF}").json()["last_rejection"], 5, "the rejection of v3"
                )
                assert rej["version"] == 3 and "ONNX" in rej["reason"]
                n = len(seen)
                wait_until(lambda: len(seen) > n + 20, 10, "more traffic")
            finally:
                stop_loop.set()
                t.join(30)
            assert not failures, failures[:3]
            assert seen[-1] == "2" and "1" in seen
            first2 = seen.index("2")
            assert set(seen[first2:]) == {"2"}, "versions went backwards"

            reload = http.post("/admin/reload")  # loopback without a token: open
            assert reload.status_code == 200
            assert reload.json()["models"][CLF]["status"] == "rejected"
            assert reload.json()["models"][CLF]["serving_version"] == 2
            assert 'ml_platform_model_reloads_total{model="churn",status="loaded"} 2' in http.get("/metrics").text
    finally:
        stop(proc)
        log.close()
    assert proc.returncode is not None
    # the live sample is flushed on shutdown
    assert list((settings.storage / "live_samples" / CLF).glob("live-*.jsonl"))


def test_cli_keeps_the_admin_token_in_a_0600_file_off_loopback(tmp_path, monkeypatch, capsys):
    import stat

    import uvicorn

    from ml_platform.serving.auth import read_admin_token, token_path

    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.update(kw, target=a[0]))
    monkeypatch.delenv(server.TOKEN_ENV, raising=False)
    settings = load_settings(write_config(tmp_path, 8080))
    path = token_path(settings.storage)
    assert not path.exists()
    server.run(settings, host="0.0.0.0", port=9999, workers=2)  # uvicorn.run is stubbed: nothing binds
    token = os.environ.pop(server.TOKEN_ENV)  # the workers get it through the environment
    assert token and path.read_text().strip() == token == read_admin_token(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    out = capsys.readouterr()
    assert token not in out.out + out.err  # never printed: only where it is
    assert str(path) in out.out
    assert calls["target"] == server.FACTORY and calls["factory"] is True and calls["workers"] == 2
    assert calls["access_log"] is False and calls["port"] == 9999
    assert os.environ[server.CONFIG_ENV] == str(settings.source)

    server.run(settings, host="10.1.2.3")  # a restart reuses the file's token
    assert os.environ.pop(server.TOKEN_ENV) == token
    assert token not in capsys.readouterr().out

    server.run(settings)  # loopback, nothing configured: no token (the file is not used)
    assert server.TOKEN_ENV not in os.environ
    assert calls["host"] == "127.0.0.1" and calls["port"] == 8080


def test_cli_uses_the_configured_admin_token(tmp_path, monkeypatch, capsys):
    import uvicorn

    from ml_platform.serving.auth import token_path

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)
    monkeypatch.delenv(server.TOKEN_ENV, raising=False)
    settings = load_settings(write_config(tmp_path, 8080, admin_token="configured-secret"))
    for host in ("0.0.0.0", "127.0.0.1"):
        server.run(settings, host=host)
        assert os.environ.pop(server.TOKEN_ENV) == "configured-secret"
    assert not token_path(settings.storage).exists()
    assert "configured-secret" not in capsys.readouterr().out


def test_factory_builds_the_app_from_the_env(tmp_path, monkeypatch, clf):
    cfg = write_config(tmp_path, 8080, admin_token="tok")
    settings = load_settings(cfg)
    publish(ModelStore(settings.serving_dir), CLF, clf, 1)
    monkeypatch.setenv(server.CONFIG_ENV, str(cfg))
    monkeypatch.delenv(server.TOKEN_ENV, raising=False)
    state = server.app_factory().state.serving
    assert state.admin_token == "tok" and state.slots[CLF].model.version == 1
    assert state.sampler.dir == settings.live_samples_dir
    assert state.poll_seconds == 0.2


def test_bad_config_exits_2(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("models: {}\n")
    assert server.main(["--config", str(tmp_path / "bad.yaml")]) == 2
    assert "error:" in capsys.readouterr().err


def test_is_loopback():
    assert server.is_loopback("127.0.0.1") and server.is_loopback("localhost") and server.is_loopback("::1")
    assert not server.is_loopback("0.0.0.0") and not server.is_loopback("10.0.0.5")
