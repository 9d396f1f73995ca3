"""MLflow tracking and model registry for trained models.

Uses an explicit `MlflowClient` rather than MLflow's process-global fluent API (or the beta
`dagster-mlflow` resource, which starts one fluent run per Dagster run and leaves it open inside
assets): every MLflow run is created, filled and closed here, marked FAILED if anything goes
wrong, so none stays open. A neural model's run opens before it trains; if its process is killed
the run stays RUNNING until recovery (`automation/recovery.py`) marks it FAILED. The run's
artifacts are the only copy of a model's weights.
"""

from __future__ import annotations

import fcntl
import re
import tempfile
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

MODEL_ARTIFACT_PATH = "model"
# The tag every run of a pipeline step carries (see `assets/training.py: lineage_tags`): how
# recovery finds the MLflow runs of a Dagster run that died.
DAGSTER_RUN_TAG = "dagster_run_id"
# What `load_forecaster` accepts: a version or an alias of a registered model, nothing else.
_REGISTERED_MODEL_URI = re.compile(
    r"models:/(?P<name>[^/@\s]+)(?:/(?P<version>[1-9][0-9]*)|@(?P<alias>[\w-]+))"
)


class UntrustedModelError(ValueError):
    """A model that is not a version this project registered from its own runs: never loaded."""


@dataclass(frozen=True)
class OpenRun:
    """An MLflow run started and not yet finished."""

    run_id: str
    artifact_uri: str


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

        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        _create_store_once(self.tracking_uri, client)
        return client

    def _experiment_id(self, client: Any) -> str:
        existing = client.get_experiment_by_name(self.experiment)
        if existing is not None:
            return existing.experiment_id
        location = self.artifact_location
        if location and "://" not in location:  # a folder; an object-store root is already a URI
            location = Path(location).as_uri()
        from mlflow.exceptions import MlflowException

        try:
            return client.create_experiment(self.experiment, artifact_location=location)
        except MlflowException as exc:
            # Steps on two workers may both find no experiment and create it: one wins.
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return client.get_experiment_by_name(self.experiment).experiment_id

    def start_run(self, *, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> OpenRun:
        """An MLflow run opened before the work it tracks, holding its parameters and lineage.

        Opening it before training (not after) makes a training in progress visible in MLflow,
        and lets a killed training leave a RUNNING run tagged with its Dagster run id, which
        recovery then marks FAILED (`fail_open_runs`) instead of leaving no trace at all.
        """
        from mlflow.entities import Param

        client = self._client()
        run = client.create_run(self._experiment_id(client), run_name=run_name, tags=tags)
        opened = OpenRun(run.info.run_id, run.info.artifact_uri)
        try:
            client.log_batch(opened.run_id, params=[Param(key, str(value)) for key, value in params.items()])
        except BaseException:
            self.fail_run(opened)
            raise
        return opened

    @contextmanager
    def training_run(
        self, *, run_name: str, params: dict[str, Any], tags: dict[str, str]
    ) -> Iterator[OpenRun]:
        """`start_run` for the block; anything the block raises marks the run FAILED.

        The block ends with `finish_run`; a process killed inside it leaves the run RUNNING for
        recovery to fail.
        """
        opened = self.start_run(run_name=run_name, params=params, tags=tags)
        try:
            yield opened
        except BaseException:
            with suppress(Exception):  # the block's own error is the one to report
                self.fail_run(opened)
            raise

    def finish_run(
        self,
        opened: OpenRun,
        *,
        registered_name: str,
        metric_history: dict[str, list[float]],
        artifact_dir: Path,
        tags: dict[str, str],
    ) -> TrackedModel:
        """Log the metrics and the model into the open run, finish it, and register the version.

        The caller records the version in the database and calls `forget` if that fails, so
        the registry never holds a version the database does not know.
        """
        from mlflow.entities import Metric, RunStatus

        client = self._client()
        logged_at = int(time.time() * 1000)
        try:
            client.log_batch(
                opened.run_id,
                metrics=[
                    Metric(name, float(value), logged_at, step)
                    for name, values in metric_history.items()
                    for step, value in enumerate(values)
                ],
            )
            client.log_artifacts(opened.run_id, str(artifact_dir), artifact_path=MODEL_ARTIFACT_PATH)
        except BaseException:
            self.fail_run(opened)
            raise
        client.set_terminated(opened.run_id, RunStatus.to_string(RunStatus.FINISHED))

        _ensure_registered_model(client, registered_name)
        source = f"{opened.artifact_uri}/{MODEL_ARTIFACT_PATH}"
        version = client.create_model_version(registered_name, source=source, run_id=opened.run_id, tags=tags)
        return TrackedModel(
            registered_name=registered_name,
            mlflow_run_id=opened.run_id,
            registry_version=str(version.version),
            artifact_uri=source,
        )

    def fail_run(self, opened: OpenRun) -> None:
        """Close a run whose work failed, so no run is left RUNNING by a failure we saw."""
        from mlflow.entities import RunStatus

        self._client().set_terminated(opened.run_id, RunStatus.to_string(RunStatus.FAILED))

    def fail_open_runs(self, dagster_run_ids: Collection[str]) -> list[str]:
        """Mark FAILED the MLflow runs still RUNNING that the given (dead) Dagster runs opened.

        Only for runs known to be over: a live run's open MLflow run is its training in progress.
        Returns the MLflow run ids marked.
        """
        from mlflow.entities import RunStatus

        if not dagster_run_ids:
            return []
        client = self._client()
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            return []
        # Few runs are ever RUNNING, so they are filtered by tag here rather than by a filter
        # string built from the ids.
        running = client.search_runs(
            [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=10_000
        )
        dead = set(dagster_run_ids)
        failed = [run.info.run_id for run in running if run.data.tags.get(DAGSTER_RUN_TAG) in dead]
        for run_id in failed:
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        return failed

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
        """One finished MLflow run holding a model made before the call, plus its registry version."""
        with self.training_run(run_name=run_name, params=params, tags=tags) as opened:
            return self.finish_run(
                opened,
                registered_name=registered_name,
                metric_history=metric_history,
                artifact_dir=artifact_dir,
                tags=tags,
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

    def model_artifacts(self, model_uri: str, destination: Path) -> Path:
        """Download the artifacts of a registered version into `destination`, only when they are
        this project's own; returns the model folder.

        Loading a neural model unpickles it (NeuralForecast.load, torch), which runs whatever code
        the bytes name, so they must be exactly what `log_trained_model` stored: a version of this
        registry, registered from a run of this project's experiment, whose source is that run's
        `model` artifact folder. A file path, an http(s) or `runs:/` URI, a model registered from
        another experiment, or a version whose source was pointed elsewhere is refused. The bytes
        are then read from the run's artifacts, not from the version's (editable) source.
        """
        from mlflow.exceptions import MlflowException

        match = _REGISTERED_MODEL_URI.fullmatch(model_uri.strip())
        if match is None:
            raise UntrustedModelError(
                f"{model_uri!r} is not a registered model of this project: give "
                "models:/<name>/<version> or models:/<name>@<alias> of its MLflow registry"
            )
        name, version_number, alias = match.group("name", "version", "alias")
        client = self._client()
        try:
            version = (
                client.get_model_version(name, version_number)
                if version_number
                else client.get_model_version_by_alias(name, alias)
            )
            run = client.get_run(version.run_id) if version.run_id else None
            experiment = client.get_experiment_by_name(self.experiment)
        except MlflowException as exc:
            raise UntrustedModelError(
                f"{model_uri}: not in this project's MLflow registry ({exc.error_code})"
            ) from None
        if run is None or experiment is None or run.info.experiment_id != experiment.experiment_id:
            raise UntrustedModelError(
                f"{model_uri}: not registered from a run of the experiment {self.experiment!r}; refused"
            )
        run_artifacts = run.info.artifact_uri
        if version.source != f"{run_artifacts}/{MODEL_ARTIFACT_PATH}" or not run_artifacts.startswith(
            experiment.artifact_location.rstrip("/") + "/"
        ):
            raise UntrustedModelError(
                f"{model_uri}: its source is not the artifacts of its run in {self.experiment!r}; refused"
            )
        return Path(client.download_artifacts(run.info.run_id, MODEL_ARTIFACT_PATH, str(destination)))

    def load_forecaster(self, model_uri: str) -> Any:
        """A trained neural model (a fitted `NeuralForecast`) from this project's registry; the one
        place that unpickles model weights, after `model_artifacts` vouched for them."""
        from neuralforecast import NeuralForecast

        with tempfile.TemporaryDirectory() as folder:
            return NeuralForecast.load(str(self.model_artifacts(model_uri, Path(folder))))

    def point_alias(self, registered_name: str, version: str, alias: str) -> None:
        """Point `alias` (say `champion`) of a registered model at a version; moves it if set."""
        self._client().set_registered_model_alias(registered_name, alias, version)


# Tracking URIs whose store this process has already seen created.
_CREATED_STORES: set[str] = set()


def _create_store_once(tracking_uri: str, client: Any) -> None:
    """Create a database store's tables under a lock held across processes.

    MLflow creates and migrates a database store's tables the first time a process opens it, with
    no lock: two steps of one run (local and global models start together) opening a new store
    both migrate it, and one fails ("table _alembic_tmp_tags already exists"). A SQLite store is
    a file of this host, so a file lock beside it serialises the first opening; a server or
    another database is left to MLflow (docs: `mlflow db upgrade` before the first run).
    """
    if tracking_uri in _CREATED_STORES or not tracking_uri.startswith("sqlite:///"):
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client.search_experiments(max_results=1)  # opens the store: creates or migrates it
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _CREATED_STORES.add(tracking_uri)


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
