"""Dagster instance parts that find the deployment themselves, named in `dagster.yaml`.

`dagster dev`, `dg dev` and `dagster-daemon` read `./dagster.yaml` from wherever they start,
without the CLI's set-up. With these classes that file needs no variables: the storage uses
FP_DATABASE_URL when it is set and otherwise starts (or reuses) the embedded PostgreSQL under
FP_HOME, exactly as `forecasting-pipeline` does; run logs and artifacts go under the CLI's
Dagster home. So a Dagster user's first command in the repository root serves the same
deployment the CLI writes to. The URL is exported to the environment, so the webserver, daemon,
code servers and runs started from this process reuse it instead of starting servers of their own.
"""

from __future__ import annotations

import os
from typing import Any

from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._core.storage.root import LocalArtifactStorage
from dagster._serdes import ConfigurableClassData
from dagster_postgres.storage import DagsterPostgresStorage

from forecasting_pipeline.settings import DATABASE_URL_VAR, load_settings


def deployment_database_url() -> str:
    """FP_DATABASE_URL, or the embedded server's URL (started, schema upgraded) when it is unset."""
    url = os.environ.get(DATABASE_URL_VAR)
    if url:
        return url
    from forecasting_pipeline.bootstrap import prepare_deployment

    return prepare_deployment().database_url


class _ConfiguredByEnvironment:
    """A Dagster configurable class whose `dagster.yaml` block is empty: settings decide it."""

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]) -> Any:
        return cls(inst_data=inst_data, **cls.from_settings())

    @classmethod
    def from_settings(cls) -> dict[str, Any]:
        raise NotImplementedError


class DeploymentPostgresStorage(_ConfiguredByEnvironment, DagsterPostgresStorage):
    """Dagster's PostgreSQL storage on the deployment's database, configured by the environment alone."""

    @classmethod
    def from_settings(cls) -> dict[str, Any]:
        return {"postgres_url": deployment_database_url()}


class DeploymentComputeLogManager(_ConfiguredByEnvironment, LocalComputeLogManager):
    """Step logs under the CLI's Dagster home (DAGSTER_HOME/storage), whoever launched the run."""

    @classmethod
    def from_settings(cls) -> dict[str, Any]:
        return {"base_dir": str(load_settings().dagster_home / "storage")}


class DeploymentArtifactStorage(_ConfiguredByEnvironment, LocalArtifactStorage):
    """Local artifacts under the CLI's Dagster home, not a `dagster dev` temporary folder."""

    @classmethod
    def from_settings(cls) -> dict[str, Any]:
        return {"base_dir": str(load_settings().dagster_home)}
