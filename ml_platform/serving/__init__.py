"""The endpoint (``app``) and the atomic model store it reads (``store``).

Kept import-light on purpose: importing ``ml_platform.serving`` pulls in nothing; the
endpoint modules never import dagster, sklearn, mlflow or pandas.
"""
