"""Where trained model artefacts are written: one folder per model name and version."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource


class ModelStoreResource(ConfigurableResource):
    """A local (or mounted) folder of checkpoints; MLflow registration builds on these paths."""

    path: str

    def version_dir(self, model_name: str, model_version: str) -> Path:
        folder = Path(self.path) / model_name / model_version
        folder.mkdir(parents=True, exist_ok=True)
        return folder
