"""The layout of one model version's files: the one place that names them.

The same files exist in two places: logged as MLflow artifacts of the version's run (the
registry: complete, the place of record) and cached locally under
``storage_dir/models/<model>/candidates/v<N>/`` (what the gate, deploy and monitoring
read; rebuilt from the registry when missing, see ``promotion.version_files``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ONNX = "model.onnx"  # the graph the endpoint serves
SERVING = "serving.json"  # core.export.serving_metadata (the endpoint's schema)
DRIFT_REFERENCE = "drift_reference.json"  # the training data's summary, drift compares with it
HOLDOUT_OUTPUTS = "holdout_sklearn.npy"  # sklearn's own holdout outputs (the parity check)
ARTIFACT_PATH = "serving"  # MLflow artifact folder holding the files below
REGISTRY_FILES = (ONNX, SERVING, DRIFT_REFERENCE)
SERVES = (ONNX, SERVING)  # what a champion move and the endpoint need


@dataclass(frozen=True)
class VersionFiles:
    dir: Path

    @property
    def onnx(self) -> Path:
        return self.dir / ONNX

    @property
    def serving(self) -> Path:
        return self.dir / SERVING

    @property
    def drift_reference(self) -> Path:
        return self.dir / DRIFT_REFERENCE

    @property
    def holdout_outputs(self) -> Path:
        return self.dir / HOLDOUT_OUTPUTS

    def complete(self, files: tuple = REGISTRY_FILES) -> bool:
        """Every one of ``files`` is here and non-empty."""
        return all((self.dir / f).is_file() and (self.dir / f).stat().st_size > 0 for f in files)


def local(model_dir: Path, version: int) -> VersionFiles:
    return VersionFiles(Path(model_dir) / "candidates" / f"v{int(version)}")
