"""Defaults of the training, tuning and backtest configs: a catalog preset, chosen by FP_PRESET.

Runs launched by the sensors, the schedule and the UI carry no run config, so the preset is
what sizes them (fast on a laptop, best on a GPU node). Without FP_PRESET the built-in defaults
apply; they equal the bundled `medium` preset.
"""

from __future__ import annotations

from typing import Any

from forecasting_pipeline.settings import load_settings


def _preset() -> Any:
    settings = load_settings()
    if not settings.preset:
        return None
    from forecasting_pipeline.modeling.catalog import load_catalog

    return load_catalog(settings.model_catalog).preset(settings.preset)


PRESET = _preset()


def preset_default(field: str, fallback: Any) -> Any:
    """The preset's value of `field` (max_steps, trials, n_windows, ensembles), else `fallback`."""
    return getattr(PRESET, field) if PRESET is not None else fallback
