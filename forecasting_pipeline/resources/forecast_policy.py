"""Deployment-wide forecasting choices that several assets must agree on."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field


class ForecastPolicyResource(ConfigurableResource):
    """Global and local models forecast the same horizon, so their forecasts can be compared."""

    horizon: int = Field(gt=0, description="Forecast steps, in each series' own frequency.")
