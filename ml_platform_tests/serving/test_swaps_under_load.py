"""Ten champion swaps under load on a real two-worker endpoint: no request fails, every
answer says which version produced it, and all workers converge on the last version."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from ml_platform.serving.store import ModelStore
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import free_port
from ml_platform_tests.e2e.helpers import stop
from ml_platform_tests.serving.conftest import CLF, publish, records
from ml_platform_tests.serving.test_process import COLS, wait_until, write_config

VERSIONS = (1, 2, 3)
SWAPS = 10
THREADS = 4
LOAD_SECONDS = 40  # hard bound on the load loop
CONVERGE_SECONDS = 6.0  # poll is 0.2 s; generous for a loaded 2-core CI machine


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.e2e
def test_ten_swaps_under_load_two_workers(tmp_path, clf):
    port = free_port()
    cfg_path = write_config(tmp_path, port)  # poll_seconds 0.2
    store = ModelStore(load_settings(cfg_path).serving_dir)
    for v in VERSIONS:
        publish(store, CLF, clf, v, point=(v == 1))
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ml_platform.serving", "--config", str(cfg_path), "--port", str(port), "--workers", "2"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/models/{CLF}/invocations"
    body = {"dataframe_records": records(clf.frame.iloc[:1], COLS)}
    seen: list[tuple[float, str | None]] = []  # (time, X-Model-Version) of every 200
    failures: list[str] = []
    halt = threading.Event()
    deadline = time.monotonic() + 90

    def load():
        stop_at = time.monotonic() + LOAD_SECONDS
        client = httpx.Client(timeout=5)
        try:
            for i in range(50_000):
                if halt.is_set() or time.monotonic() > stop_at:
                    return
                if i % 50 == 49:  # new connections now and then: they land on either worker
                    client.close()
                    client = httpx.Client(timeout=5)
                try:
                    r = client.post(url, json=body)
                except httpx.HTTPError as e:
                    failures.append(repr(e))
                    continue
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    seen.append((time.monotonic(), r.headers.get("x-model-version")))
        finally:
            client.close()

    threads = [threading.Thread(target=load, daemon=True) for _ in range(THREADS)]
    try:

        def ready():
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                return httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, 30, "the endpoint to be ready")
        for t in threads:
            t.start()
        wait_until(lambda: len(seen) > 50, 10, "traffic")

        with httpx.Client(base_url=base, timeout=10) as admin:
            order = [VERSIONS[(i + 1) % len(VERSIONS)] for i in range(SWAPS)]  # 2, 3, 1, 2, ...
            for v in order:
                store.point(CLF, v)
                r = admin.post("/admin/reload", params={"model": CLF})
                assert r.status_code == 200, r.text
                assert r.json()["models"][CLF]["serving_version"] == v, r.json()
                n = len(seen)
                # traffic answered by v, and time for the other worker's poller (0.2 s) too
                wait_until(lambda: sum(x == str(v) for _, x in seen[n:]) >= 20, 20, f"traffic on v{v}")
                time.sleep(0.3)
            final, swapped_at = str(order[-1]), time.monotonic()

            # Every worker serves the final version within CONVERGE_SECONDS: fresh connections
            # (spread over the workers) until 20 answers in a row say so, and that run of answers
            # began within CONVERGE_SECONDS (on a loaded box the 20 requests themselves may take
            # longer: their duration says nothing about convergence).
            streak, streak_from = 0, None
            while streak < 20:
                sent = time.monotonic()
                assert sent - swapped_at < 60, "workers did not converge within 60 s"
                r = httpx.post(url, json=body, timeout=5, headers={"connection": "close"})
                assert r.status_code == 200
                if r.headers.get("x-model-version") == final:
                    streak, streak_from = streak + 1, streak_from if streak else sent
                else:
                    streak, streak_from = 0, None
            converged_in = streak_from - swapped_at
            assert converged_in < CONVERGE_SECONDS, f"workers converged {converged_in:.1f} s after the swap"
        # ... and the load threads' keep-alive connections too, once that window is over.
        time.sleep(max(0.0, swapped_at + CONVERGE_SECONDS + 0.5 - time.monotonic()))
    finally:
        halt.set()
        for t in threads:
            t.join(max(1, deadline - time.monotonic()))
        stop(proc)
        log.close()
    assert all(not t.is_alive() for t in threads)
    assert proc.returncode is not None and wait_until(lambda: _group_gone(proc.pid), 5, "no process left")

    assert not failures, failures[:5]
    versions = [v for _, v in seen]
    assert len(versions) > 20 * SWAPS
    assert None not in versions, "a response without X-Model-Version"
    assert set(versions) == {str(v) for v in VERSIONS}, sorted(set(versions))
    late = {v for t, v in seen if t > swapped_at + CONVERGE_SECONDS}
    assert late == {final}, (late, converged_in)
