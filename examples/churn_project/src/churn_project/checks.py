"""The team's own gate check: blocking, like the platform's built-in five."""

import numpy as np
from sklearn.metrics import roc_auc_score

from ml_platform import GateVerdict


def no_worse_for_new_customers(candidate, champion, rows) -> GateVerdict:
    """ROC AUC on customers in their first year is not worse than the champion's by more than 0.02."""
    new = (rows["tenure_months"] < 12).to_numpy()
    y = rows["churned"].to_numpy()
    if new.sum() < 30 or len(np.unique(y[new])) < 2:
        return GateVerdict(True, f"only {int(new.sum())} first-year customers: not judged")
    cand = roc_auc_score(y[new], candidate.values[new, 1])
    if champion is None:
        return GateVerdict(True, f"first model: ROC AUC {cand:.3f} on first-year customers", {"candidate": cand})
    champ = roc_auc_score(y[new], champion.values[new, 1])
    return GateVerdict(
        cand >= champ - 0.02,
        f"first-year customers: ROC AUC {cand:.3f} vs champion {champ:.3f}",
        {"candidate": cand, "champion": champ},
    )
