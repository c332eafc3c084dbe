"""Which way each metric is better: read by training, the gate and the monitoring readers
(``status`` among them), which must not import scikit-learn to know it."""

HIGHER_IS_BETTER = {
    "roc_auc": True,
    "accuracy": True,
    "f1": True,
    "r2": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
}
