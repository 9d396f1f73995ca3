"""Unit tests of the model catalog: lookup by name and what each builder returns."""

from __future__ import annotations

import pytest

from forecasting_pipeline.modeling.catalog import (
    GlobalModelParams,
    global_model_spec,
    local_model_spec,
)


def test_unknown_global_model_lists_the_catalog():
    with pytest.raises(ValueError, match=r"'Prophet'.*\['NHITS'\]"):
        global_model_spec("Prophet")


def test_unknown_local_model_lists_the_catalog():
    with pytest.raises(ValueError, match=r"'AutoARIMA'.*\['SeasonalNaive'\]"):
        local_model_spec("AutoARIMA")


def test_model_names_are_case_sensitive():
    with pytest.raises(ValueError):
        global_model_spec("nhits")


def test_seasonal_naive_takes_the_season_length():
    from statsforecast.models import SeasonalNaive

    spec = local_model_spec("SeasonalNaive")
    assert spec.name == "SeasonalNaive"
    model = spec.build(24)
    assert isinstance(model, SeasonalNaive)
    assert model.season_length == 24


def test_nhits_is_built_from_the_params():
    from neuralforecast.models import NHITS

    spec = global_model_spec("NHITS")
    assert spec.point_column == "NHITS-median"

    params = GlobalModelParams(
        horizon=6, input_size=12, max_steps=2, learning_rate=1e-3, batch_size=4, seed=1
    )
    model = spec.build(params, {"accelerator": "cpu", "devices": 1})

    assert isinstance(model, NHITS)
    assert model.h == 6
    assert model.input_size == 12
    assert model.max_steps == 2
    assert model.trainer_kwargs["accelerator"] == "cpu"
    assert model.trainer_kwargs["devices"] == 1
    # Its output columns are the point and the 80 % and 95 % bounds that to_forecast_frame reads.
    assert {str(name) for name in model.loss.output_names} == {
        "-median",
        "-lo-80",
        "-hi-80",
        "-lo-95",
        "-hi-95",
    }
