"""MLflow tracking and model registry for trained models.

Uses an explicit `MlflowClient` rather than MLflow's process-global fluent API (or the beta
`dagster-mlflow` resource, which starts one fluent run per Dagster run and leaves it open inside
assets): every MLflow run is created, filled and closed here, marked FAILED if anything goes
wrong, so none stays open. The run's artifacts are the only copy of a model's weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

MODEL_ARTIFACT_PATH = "model"


@dataclass(frozen=True)
class TrackedModel:
    registered_name: str
    mlflow_run_id: str
    registry_version: str
    artifact_uri: str  # where the weights are: the MLflow run's `model` artifact folder


class MlflowTrackerResource(ConfigurableResource):
    """Logs a trained model's parameters, metrics and weights, and registers the version."""

    tracking_uri: str = Field(description="MLflow tracking URI; pass as EnvVar when it has credentials.")
    experiment: str = Field(default="forecasting-pipeline")
    artifact_location: str | None = Field(
        default=None, description="Artifact root for a new experiment; None lets the server decide."
    )

    def _client(self) -> Any:
        from mlflow import MlflowClient  # imported on use: ~1.5 s

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def _experiment_id(self, client: Any) -> str:
        existing = client.get_experiment_by_name(self.experiment)
        if existing is not None:
            return existing.experiment_id
        location = Path(self.artifact_location).as_uri() if self.artifact_location else None
        return client.create_experiment(self.experiment, artifact_location=location)

    def log_trained_model(
        self,
        *,
        registered_name: str,
        run_name: str,
        params: dict[str, Any],
        metric_history: dict[str, list[float]],
        artifact_dir: Path,
        tags: dict[str, str],
    ) -> TrackedModel:
        """One finished MLflow run holding the model, plus a registry version pointing at it.

        The caller records the version in the database and calls `forget` if that fails, so
        the registry never holds a version the database does not know.
        """
        from mlflow.entities import Metric, Param, RunStatus

        client = self._client()
        run = client.create_run(self._experiment_id(client), run_name=run_name, tags=tags)
        run_id = run.info.run_id
        logged_at = int(time.time() * 1000)
        try:
            client.log_batch(
                run_id,
                params=[Param(key, str(value)) for key, value in params.items()],
                metrics=[
                    Metric(name, float(value), logged_at, step)
                    for name, values in metric_history.items()
                    for step, value in enumerate(values)
                ],
            )
            client.log_artifacts(run_id, str(artifact_dir), artifact_path=MODEL_ARTIFACT_PATH)
        except BaseException:
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))

        _ensure_registered_model(client, registered_name)
        version = client.create_model_version(
            registered_name,
            source=f"{run.info.artifact_uri}/{MODEL_ARTIFACT_PATH}",
            run_id=run_id,
            tags=tags,
        )
        return TrackedModel(
            registered_name=registered_name,
            mlflow_run_id=run_id,
            registry_version=str(version.version),
            artifact_uri=f"{run.info.artifact_uri}/{MODEL_ARTIFACT_PATH}",
        )

    def log_model_spec(
        self, *, registered_name: str, run_name: str, spec: dict[str, Any], tags: dict[str, str]
    ) -> TrackedModel:
        """Register a model that is its specification (a refit-on-forecast statistical family or an
        ensemble): the version's artifact is `spec.json`, its parameters are logged flat."""
        import json
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "spec.json").write_text(json.dumps(spec, indent=2, default=str))
            params = {k: v for k, v in spec.items() if not isinstance(v, dict)}
            params.update(spec.get("params", {}))
            return self.log_trained_model(
                registered_name=registered_name,
                run_name=run_name,
                params=params,
                metric_history={},
                artifact_dir=Path(folder),
                tags=tags,
            )

    def forget(self, tracked: TrackedModel, reason: str) -> None:
        """Undo a registration whose database record failed: delete the version, tag the run."""
        client = self._client()
        client.delete_model_version(tracked.registered_name, tracked.registry_version)
        client.set_tag(tracked.mlflow_run_id, "forecasting_pipeline.orphaned", reason[:4000])

    def point_alias(self, registered_name: str, version: str, alias: str) -> None:
        """Point `alias` (say `champion`) of a registered model at a version; moves it if set."""
        self._client().set_registered_model_alias(registered_name, alias, version)


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
