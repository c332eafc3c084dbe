"""The collector settings of a long-lived serving process (an endpoint worker, a shadow scorer)."""

from __future__ import annotations

import gc


def freeze_heap() -> None:
    """Everything loaded so far (modules, sessions, schemas) lives as long as the process: move it
    out of the collector's reach, and collect young garbage less often, so that neither a request
    nor a scored batch pays for a scan of the whole heap (in the scorer, such scans also evicted
    its worker's caches on a shared core: benchmarks/README.md "Shadow cost")."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
