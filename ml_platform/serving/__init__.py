"""The scoring endpoint (``app``; its docstring shows how the modules stack up) and the
atomic model store it reads (``store``).

Kept import-light on purpose: importing ``ml_platform.serving`` pulls in nothing; the
endpoint modules never import dagster, sklearn, mlflow or pandas (an import-linter
contract in ``pyproject.toml`` checks the first three).
"""
