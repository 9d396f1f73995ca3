"""The model catalog: a new model family is one entry here.

Global models learn across all series of a panel (neuralforecast, one artefact per training
window); local models fit each series alone (statsforecast). Every entry produces intervals at
`schemas.INTERVAL_LEVELS`. Libraries are imported inside the builders: importing
neuralforecast costs 5–10 s and must not slow down loading the definitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from forecasting_pipeline.schemas import INTERVAL_LEVELS


@dataclass(frozen=True)
class GlobalModelParams:
    """Size and training budget of a global model; tests pass tiny values."""

    horizon: int
    input_size: int
    max_steps: int
    learning_rate: float
    batch_size: int
    seed: int


@dataclass(frozen=True)
class GlobalModelSpec:
    name: str
    # The column holding the point forecast in neuralforecast's output.
    point_column: str
    build: Callable[[GlobalModelParams, dict[str, Any]], Any]


def _build_nhits(params: GlobalModelParams, trainer_kwargs: dict[str, Any]) -> Any:
    from neuralforecast.losses.pytorch import MQLoss
    from neuralforecast.models import NHITS

    return NHITS(
        h=params.horizon,
        input_size=params.input_size,
        loss=MQLoss(level=list(INTERVAL_LEVELS)),
        max_steps=params.max_steps,
        learning_rate=params.learning_rate,
        batch_size=params.batch_size,
        scaler_type="robust",
        random_seed=params.seed,
        start_padding_enabled=True,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        **trainer_kwargs,
    )


GLOBAL_MODELS: dict[str, GlobalModelSpec] = {
    spec.name: spec
    for spec in (GlobalModelSpec(name="NHITS", point_column="NHITS-median", build=_build_nhits),)
}


@dataclass(frozen=True)
class LocalModelSpec:
    name: str
    build: Callable[[int], Any]  # season length -> statsforecast model

    @property
    def point_column(self) -> str:
        """statsforecast names the point forecast after the model."""
        return self.name


def _build_seasonal_naive(season: int) -> Any:
    from statsforecast.models import SeasonalNaive

    return SeasonalNaive(season_length=season)


LOCAL_MODELS: dict[str, LocalModelSpec] = {
    spec.name: spec for spec in (LocalModelSpec(name="SeasonalNaive", build=_build_seasonal_naive),)
}


def global_model_spec(name: str) -> GlobalModelSpec:
    try:
        return GLOBAL_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown global model {name!r}; catalog has {sorted(GLOBAL_MODELS)}") from None


def local_model_spec(name: str) -> LocalModelSpec:
    try:
        return LOCAL_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown local model {name!r}; catalog has {sorted(LOCAL_MODELS)}") from None
