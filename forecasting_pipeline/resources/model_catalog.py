"""The deployment's model catalog and frequency groups, as a resource every training asset shares."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import ConfigurableResource
from pydantic import Field

if TYPE_CHECKING:
    from forecasting_pipeline.modeling.catalog import GroupSpec, ModelCatalog


class ModelCatalogResource(ConfigurableResource):
    """Families, search spaces and per-group horizons come from YAML, not from code edits."""

    path: str | None = Field(default=None, description="Catalog YAML; None: the bundled catalog.")
    horizon_override: int | None = Field(
        default=None, gt=0, description="When set, every frequency group forecasts this many steps."
    )
    statsforecast_n_jobs: int = Field(default=1, gt=0, description="Processes of the StatsForecast call.")

    def catalog(self) -> ModelCatalog:
        from forecasting_pipeline.modeling.catalog import load_catalog

        return load_catalog(self.path)

    def group(self, name: str) -> GroupSpec:
        return self.catalog().group(name)

    def horizon(self, group: str) -> int:
        """Forecast steps of a group: global and local families agree, so they can be compared."""
        return self.horizon_override or self.group(group).horizon
