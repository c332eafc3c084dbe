"""One ingest per landing file between `ml-platform run` and `up`'s landing sensor.

Each side takes a file only after looking at what the other took, under one lock
(``INGEST_CLAIMS_LOCK``; held while every batch record is read): `run` claims a file
(``ingest_claims.json``: content -> claimant) before its in-process ingest and releases it once
the batch record holds the content (or the ingest failed); a killed `run`'s claim stops counting
as ``decisions.claimant_live`` says and is dropped the next time the file is written. The
sensor marks a file requested in its landing index in the same locked section in which it read
the records and `run`'s claims. So the sensor never requests a file `run` is ingesting or has
ingested, and `run` leaves a file the sensor has just requested to the sensor's run (and every
file while the sensor's index cannot be read: it may hold a request).

Behind that, the ingest asset itself (``ingested_by``): an arrival run (the sensor's, `run`'s)
of a partition another run already ingested with the same content copies nothing and
materializes nothing new; it says "already ingested by run X". A run that died (marked
failed) does not count: its retry ingests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import contextmanager

import dagster as dg

from ml_platform import names
from ml_platform.control.chain import Chain
from ml_platform.control.decisions import CLAIM_TTL_SECONDS, claimant_live
from ml_platform.core import catalog, files
from ml_platform.core.batch_record import BatchRecord
from ml_platform.core.landing_index import SensorRequest, requested_at
from ml_platform.names import TAG_FILES, TAG_SOURCE

SENSOR_REQUEST_SECONDS = CLAIM_TTL_SECONDS  # a request older than this without its ingest: `run` takes the file
INDEX_BUSY_SECONDS = 5.0  # `run` waits so long for the sensor's index to be readable (a commit takes ms)
_DEAD = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


@contextmanager
def claims_lock(chain: Chain):
    with files.file_lock(chain.dir / names.INGEST_CLAIMS_LOCK, timeout=120, what="the ingest-claims lock"):
        yield


def _path(chain: Chain):
    return chain.dir / names.INGEST_CLAIMS


def _read(chain: Chain) -> dict:
    try:
        data = json.loads(_path(chain).read_text())
    except (OSError, ValueError):  # none yet, or torn: claims are short-lived, start again
        return {}
    return data if isinstance(data, dict) else {}


def _live(claims: dict, now: float | None = None) -> dict[str, dict]:
    """The claims whose `run` is still there (``decisions.claimant_live``), as stored."""
    return {
        sha: c
        for sha, c in claims.items()
        if isinstance(c, dict) and claimant_live(str(c.get("by", "")), c.get("at"), now)
    }


def live_claims(chain: Chain) -> dict[str, str]:
    """content sha256 -> claimant, of the claims whose `run` is still there (call under the lock)."""
    return {sha: str(c.get("by")) for sha, c in _live(_read(chain)).items()}


def _sensor_requested(chain: Chain, sha: str, now: float) -> SensorRequest | None:
    """The landing sensor's request of this content, if it made one lately (or its index cannot
    be read now and was written lately: it may have)."""
    req = requested_at(chain.dir / names.LANDING_INDEX, sha, timeout=INDEX_BUSY_SECONDS)
    return req if req is not None and now - req.at < SENSOR_REQUEST_SECONDS else None


def claim(chain: Chain, sha: str, partition: str, by: str) -> str | None:
    """Take a landing file for `run`'s ingest: None when taken, else why it is left alone."""
    now = time.time()
    with claims_lock(chain):
        if sha in catalog.known_sha256(chain.dir):
            return "already ingested by another process"
        claims = _live(_read(chain), now)  # a killed `run`'s claims are dropped (written below)
        other = claims.get(sha, {}).get("by")
        if other is not None and other != by:
            return f"being ingested by `ml-platform {other}`"
        req = _sensor_requested(chain, sha, now)
        if req is not None and req.unreadable:
            return (
                f"the landing sensor's index cannot be read now ({req.unreadable}; last written "
                f"{now - req.at:.0f} s ago): left to `ml-platform up`'s landing sensor, which may have requested it"
            )
        if req is not None:
            return f"requested by `ml-platform up`'s landing sensor {now - req.at:.0f} s ago: its ingest run takes it"
        claims[sha] = {"by": by, "at": now, "partition": partition}
        files.write_json(_path(chain), claims, "the ingest claims")
    return None


def release(chain: Chain, sha: str) -> None:
    """After `run`'s ingest of ``sha``: its record holds the content now (or the ingest failed
    and the sensor may take the file again)."""
    with claims_lock(chain):
        stored = _read(chain)
        claims = _live(stored)  # a killed `run`'s claims are dropped here
        claims.pop(sha, None)
        if claims != stored:
            files.write_json(_path(chain), claims, "the ingest claims")


# ------------------------------------------------------------------ in the ingest assets
def arrival_run(tags) -> bool:
    """A run that ingests landing files as they arrive (the landing sensor's, `run`'s, a retry
    of one), not a person re-materializing a partition in the UI."""
    return TAG_SOURCE in tags or TAG_FILES in tags


def ingested_by(instance: dg.DagsterInstance, rec: BatchRecord | None, run_id: str, sha: str | None) -> str | None:
    """The other run that ingested this content into this partition, if it succeeded or is still
    going (a run that failed or died does not hold the batch: its retry ingests)."""
    if rec is None or not rec.ingest_run or rec.ingest_run == run_id:
        return None
    if sha and rec.sha256 and rec.sha256 != sha:  # other content under the key: not this batch
        return None
    run = instance.get_run_by_id(rec.ingest_run)
    return None if run is None or run.status in _DEAD else rec.ingest_run


def ingested_elsewhere(chain: Chain, instance: dg.DagsterInstance, run_id: str, tags) -> Callable[[str], str | None]:
    """For an arrival run's assets: partition -> the other run that ingested it (None: this run's)."""
    if not arrival_run(tags):
        return lambda _partition: None
    return lambda partition: ingested_by(instance, catalog.read_record(chain.dir, partition), run_id, None)
