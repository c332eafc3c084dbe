"""Gate checks as users write them (``gate.checks``)."""

import numpy as np

from ml_platform import GateVerdict


def positive_rate_buggy(candidate, champion, rows) -> GateVerdict:
    """A check with a bug: pandas puts the whole column in its error message."""
    raise TypeError("Could not convert string '" + "01" * 200 + "' to numeric")


def positive_rate(candidate, champion, rows) -> GateVerdict:
    """Mean predicted churn within 0.1 of the observed rate; the target typed as the classes."""
    classes = list(candidate.classes)
    observed = float(rows["churned"].mean())  # TypeError on a column of "0"/"1" strings
    predicted = float(np.asarray(candidate.values)[:, classes.index(1)].mean())
    typed = {type(v).__name__ for v in rows["churned"]} | {type(c).__name__ for c in classes}
    return GateVerdict(abs(predicted - observed) <= 0.1, f"{predicted:.3f} vs {observed:.3f}; types {sorted(typed)}")
