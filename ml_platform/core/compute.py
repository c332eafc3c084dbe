"""How the platform runs scikit-learn: fits and predictions on one OpenMP/BLAS thread.

The platform's models are fitted and scored on batches of thousands of rows, on machines the
daemon, the webserver, the endpoint and other runs share. There, HistGradientBoosting's OpenMP
threads wait for each other at every barrier while the cores are busy elsewhere: measured on
2 cores with one other busy process, a 2,000-row fit took 1.1-3.3 s instead of 0.07-0.10 s and
a 2,000-row predict_proba 165-267 ms instead of 6-7 ms. One thread is never slower here.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager

import numpy as np
from threadpoolctl import ThreadpoolController

_controller: tuple[int, ThreadpoolController] | None = None


def one_thread() -> AbstractContextManager:
    """Limit the loaded OpenMP/BLAS libraries to one thread for the ``with`` block."""
    global _controller
    # Finding the loaded libraries costs ~3 ms; redone only when modules (and so native libraries,
    # e.g. a user's LightGBM) were imported since.
    if _controller is None or _controller[0] != len(sys.modules):
        _controller = (len(sys.modules), ThreadpoolController())
    return _controller[1].limit(limits=1)


def outputs(pipe, x, task: str) -> np.ndarray:
    """The model's outputs as float64: class probabilities (classification) or values."""
    with one_thread():
        out = pipe.predict_proba(x) if task == "classification" else pipe.predict(x)
    return np.asarray(out, dtype=np.float64)
