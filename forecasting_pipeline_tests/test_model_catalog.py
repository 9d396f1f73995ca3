"""The YAML model catalog: what it loads, what it refuses, and that every family it ships really
trains and forecasts with 80 % and 95 % intervals on the installed libraries (tiny models, CPU)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from forecasting_pipeline.modeling.catalog import (
    BUNDLED_CATALOG,
    GROUPS,
    CatalogError,
    FamilySpec,
    NeuralShape,
    ParamSpace,
    build_local_model,
    build_neural_model,
    load_catalog,
    neural_params,
    suggest_params,
)

CATALOG = load_catalog()
NEURAL = [name for name, spec in CATALOG.families.items() if spec.library == "neuralforecast"]
LOCAL = [name for name, spec in CATALOG.families.items() if spec.library == "statsforecast"]

HORIZON = 12
SHAPE = NeuralShape(
    horizon=HORIZON,
    input_size=2 * HORIZON,
    max_steps=2,
    seed=7,
    trainer_kwargs={"accelerator": "cpu", "devices": 1},
)
# Few windows per step keeps the larger families (TFT, NHITS' 512-wide MLPs) at seconds on CPU.
TINY = {"batch_size": 2, "windows_batch_size": 16}


def _hourly_panel(points: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    ds = pd.date_range("2024-01-01", periods=points, freq="h")
    hour = ds.hour.to_numpy()
    frames = []
    for number, series_id in enumerate(("a", "b")):
        temperature = np.cos(2 * np.pi * hour / 24) + rng.normal(0, 0.1, points)
        y = 10 + 3 * number + 3 * np.sin(2 * np.pi * hour / 24) + temperature + rng.normal(0, 0.3, points)
        frames.append(
            pd.DataFrame(
                {
                    "unique_id": series_id,
                    "ds": ds,
                    "y": y,
                    "temperature": temperature,
                    "sales_lag": np.roll(y, 1),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _future_temperature(future: pd.DataFrame) -> pd.DataFrame:
    return future.assign(temperature=np.cos(2 * np.pi * future["ds"].dt.hour / 24))


def _interval_columns(name: str, point: str) -> set[str]:
    return {point} | {f"{name}-{side}-{level}" for level in (80, 95) for side in ("lo", "hi")}


# --- the bundled catalog ----------------------------------------------------------------------------


def test_bundled_catalog_has_every_family_and_group():
    assert {"NHITS", "NBEATSx", "TFT", "LSTM", "TiDE"} <= set(NEURAL)
    assert {"SeasonalNaive", "AutoETS", "AutoTheta", "AutoARIMA", "CrostonOptimized"} <= set(LOCAL)
    assert tuple(CATALOG.frequency_groups) == GROUPS
    # The default run stays cheap on CPU: one neural family, the slow ARIMA off.
    assert [s.name for s in CATALOG.neural()] == ["NHITS"]
    assert {s.name for s in CATALOG.local()} == {"SeasonalNaive", "AutoETS", "AutoTheta", "CrostonOptimized"}
    assert CATALOG.family("NHITS").scope == "global"
    assert CATALOG.family("NHITS").point_column == "NHITS-median"
    assert CATALOG.family("AutoETS").scope == "local"
    assert CATALOG.family("AutoETS").point_column == "AutoETS"


def test_lookups_name_the_catalog():
    with pytest.raises(ValueError, match=r"'Prophet'.*'AutoETS'"):
        CATALOG.family("Prophet")
    with pytest.raises(ValueError, match=r"'fortnightly'.*'hourly'"):
        CATALOG.group("fortnightly")
    with pytest.raises(ValueError, match=r"'NHiTS'"):
        CATALOG.local(["AutoETS", "NHiTS"])


def test_one_list_of_names_selects_each_scope_disabled_families_included():
    names = ["AutoARIMA", "TFT", "AutoETS", "NHITS"]
    assert [s.name for s in CATALOG.neural(names)] == ["TFT", "NHITS"]
    assert [s.name for s in CATALOG.local(names)] == ["AutoARIMA", "AutoETS"]


def test_neural_accepts_match_the_library_classes():
    from neuralforecast import models

    for name in NEURAL:
        spec = CATALOG.family(name)
        model_class = getattr(models, spec.model_class)
        assert spec.accepts.historical_exogenous == model_class.EXOGENOUS_HIST, name
        assert spec.accepts.future_exogenous == model_class.EXOGENOUS_FUTR, name
        assert spec.accepts.static_features == model_class.EXOGENOUS_STAT, name


def test_every_group_leaves_room_for_conformal_intervals():
    for group in GROUPS:
        spec = CATALOG.group(group)
        assert spec.min_points >= 2 * spec.horizon + 1, group


# --- neural families ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NEURAL)
def test_every_neural_family_trains_and_forecasts_intervals_with_the_drivers_it_accepts(name: str):
    from neuralforecast import NeuralForecast

    spec = CATALOG.family(name)
    accepts = spec.accepts
    shape = dataclasses.replace(
        SHAPE,
        hist_exog=("sales_lag",) if accepts.historical_exogenous else (),
        futr_exog=("temperature",) if accepts.future_exogenous else (),
        stat_exog=("level",) if accepts.static_features else (),
    )
    panel = _hourly_panel()
    columns = ["unique_id", "ds", "y", *shape.hist_exog, *shape.futr_exog]
    static = pd.DataFrame({"unique_id": ["a", "b"], "level": [0.0, 1.0]}) if shape.stat_exog else None

    model = build_neural_model(spec, TINY, shape)
    forecaster = NeuralForecast(models=[model], freq="h")
    forecaster.fit(df=panel[columns], static_df=static)
    future = _future_temperature(forecaster.make_future_dataframe()) if shape.futr_exog else None
    forecast = forecaster.predict(futr_df=future)

    assert list(model.futr_exog_list) == list(shape.futr_exog)
    assert _interval_columns(name, spec.point_column) <= set(forecast.columns)
    assert len(forecast) == 2 * HORIZON
    assert np.isfinite(forecast[sorted(_interval_columns(name, spec.point_column))].to_numpy()).all()


def test_neural_builder_applies_the_run_shape_and_catalog_defaults():
    from neuralforecast.models import NHITS

    spec = CATALOG.family("NHITS")
    model = build_neural_model(spec, {"learning_rate": 5e-3}, dataclasses.replace(SHAPE, val_check_steps=1))

    assert isinstance(model, NHITS)
    assert (model.h, model.input_size, model.max_steps, model.random_seed) == (HORIZON, 24, 2, 7)
    assert model.learning_rate == 5e-3
    assert model.batch_size == spec.defaults["batch_size"]
    assert model.val_check_steps == 1
    assert model.alias == "NHITS"
    assert model.trainer_kwargs["accelerator"] == "cpu"
    assert model.trainer_kwargs["logger"] is False
    assert {str(n) for n in model.loss.output_names} == {"-median", "-lo-80", "-hi-80", "-lo-95", "-hi-95"}


def test_input_size_multiplier_sets_the_lookback_in_horizons():
    model = build_neural_model(CATALOG.family("NHITS"), {"input_size_multiplier": 3}, SHAPE)
    assert model.input_size == 3 * HORIZON


def test_patches_are_cut_to_a_short_lookback():
    model = build_neural_model(
        CATALOG.family("PatchTST"), {"input_size_multiplier": 1, "patch_len": 24}, SHAPE
    )
    assert model.input_size == HORIZON
    assert model.hparams["patch_len"] == HORIZON
    assert model.hparams["stride"] <= HORIZON


def test_a_family_refuses_drivers_it_cannot_use():
    shape = dataclasses.replace(SHAPE, futr_exog=("temperature",))
    with pytest.raises(ValueError, match=r"PatchTST does not accept future_exogenous.*temperature"):
        build_neural_model(CATALOG.family("PatchTST"), {}, shape)


def test_unknown_parameters_are_refused_not_passed_to_the_trainer():
    with pytest.raises(ValueError, match=r"NHITS: .*NHITS takes no argument\(s\) \['hiden_size'\]"):
        build_neural_model(CATALOG.family("NHITS"), {"hiden_size": 8}, SHAPE)


def test_builders_refuse_the_other_library():
    with pytest.raises(ValueError, match="AutoETS is a statsforecast family"):
        build_neural_model(CATALOG.family("AutoETS"), {}, SHAPE)
    with pytest.raises(ValueError, match="NHITS is a neuralforecast family"):
        build_local_model(CATALOG.family("NHITS"), {}, season_length=24, horizon=HORIZON)


# --- statistical families -------------------------------------------------------------------------------


def _daily_panel() -> pd.DataFrame:
    """Two seasonal series and one intermittent count series, as local families meet them."""
    rng = np.random.default_rng(1)
    points = 120
    ds = pd.date_range("2024-01-01", periods=points, freq="D")
    weekday = ds.dayofweek.to_numpy()
    return pd.DataFrame(
        {
            "unique_id": np.repeat(["smooth", "trend", "counts"], points),
            "ds": np.tile(ds, 3),
            "y": np.concatenate(
                [
                    20 + 5 * (weekday >= 5) + rng.normal(0, 1, points),
                    10 + 0.1 * np.arange(points) + 3 * (weekday == 0) + rng.normal(0, 1, points),
                    rng.poisson(0.4, points).astype(float),
                ]
            ),
        }
    )


def test_every_statistical_family_forecasts_intervals_in_one_call():
    from statsforecast import StatsForecast

    horizon = 6
    specs = [CATALOG.family(name) for name in LOCAL]
    models = [build_local_model(spec, {}, season_length=7, horizon=horizon) for spec in specs]

    forecast = StatsForecast(models=models, freq="D", n_jobs=1).forecast(
        df=_daily_panel(), h=horizon, level=[80, 95]
    )

    assert len(forecast) == 3 * horizon
    for spec in specs:
        name = spec.name
        assert _interval_columns(name, spec.point_column) <= set(forecast.columns), name
        bounds = forecast[[f"{name}-lo-95", f"{name}-lo-80", name, f"{name}-hi-80", f"{name}-hi-95"]]
        assert np.isfinite(bounds.to_numpy()).all(), name
        assert (bounds.diff(axis=1).iloc[:, 1:] >= -1e-9).all().all(), f"{name} bounds are not nested"


def test_local_builder_passes_season_tuned_params_and_conformal_intervals():
    ets = build_local_model(CATALOG.family("AutoETS"), {"model": "ZAZ", "damped": True}, 24, HORIZON)
    assert (ets.alias, ets.season_length, ets.model, ets.damped) == ("AutoETS", 24, "ZAZ", True)
    assert ets.prediction_intervals is None  # native intervals

    croston = build_local_model(CATALOG.family("CrostonOptimized"), {}, 24, HORIZON)
    assert not hasattr(croston, "season_length")
    assert (croston.prediction_intervals.h, croston.prediction_intervals.n_windows) == (HORIZON, 2)


# --- tuning ---------------------------------------------------------------------------------------------


def _edge_of(space: ParamSpace, end: int) -> Any:
    if space.type == "categorical":
        return space.choices[end]
    return space.low if end == 0 else space.high


@pytest.mark.parametrize("end", [0, -1])
def test_suggest_params_draws_every_parameter_within_its_space(end: int):
    for spec in CATALOG.families.values():
        fixed = {name: _edge_of(space, end) for name, space in spec.search_space.items()}
        drawn = suggest_params(optuna.trial.FixedTrial(fixed), spec)
        assert drawn == fixed, spec.name
        for name, space in spec.search_space.items():
            if space.type == "categorical":
                assert drawn[name] in space.choices
            else:
                assert space.low <= drawn[name] <= space.high
                assert isinstance(drawn[name], int if space.type == "int" else float)


def test_tuned_params_overlay_the_defaults():
    spec = CATALOG.family("TFT")
    assert neural_params(spec, None) == spec.defaults
    assert neural_params(spec, {"hidden_size": 32})["hidden_size"] == 32
    assert neural_params(spec, {"hidden_size": 32})["learning_rate"] == spec.defaults["learning_rate"]


# --- malformed catalogs ---------------------------------------------------------------------------------


def _bundled() -> dict[str, Any]:
    return yaml.safe_load(BUNDLED_CATALOG.read_text())


def _write(tmp_path: Path, content: dict[str, Any]) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def _unknown_key(c):
    c["families"]["TFT"]["colour"] = "red"


def _unknown_class(c):
    c["families"]["NBEATSx"]["model_class"] = "NBEATSxx"


def _bad_space_type(c):
    c["families"]["NHITS"]["search_space"]["learning_rate"]["type"] = "loguniform"


def _list_choices(c):
    c["families"]["NHITS"]["search_space"]["n_pool_kernel_size"] = {
        "type": "categorical",
        "choices": [[2, 2, 1], [4, 2, 1]],
    }


def _log_from_zero(c):
    c["families"]["LSTM"]["search_space"]["encoder_n_layers"] = {
        "type": "int",
        "low": 0,
        "high": 3,
        "log": True,
    }


def _reserved_default(c):
    c["families"]["TiDE"]["defaults"]["input_size"] = 48


def _wrong_loss(c):
    c["families"]["SeasonalNaive"]["loss"] = "MQLoss"


def _static_to_statsforecast(c):
    c["families"]["AutoTheta"]["accepts"]["static_features"] = True


def _missing_group(c):
    del c["frequency_groups"]["weekly"]


def _too_short_for_conformal(c):
    c["frequency_groups"]["hourly"]["min_points"] = 30


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_unknown_key, r"families\.TFT\.colour: Extra inputs are not permitted"),
        (_unknown_class, r"families\.NBEATSx: .*no class 'NBEATSxx'"),
        (_bad_space_type, r"families\.NHITS\.search_space\.learning_rate\.type: Input should be 'int'"),
        (_list_choices, r"families\.NHITS\.search_space\.n_pool_kernel_size: .*null, booleans, numbers"),
        (_log_from_zero, r"families\.LSTM\.search_space\.encoder_n_layers: .*low >= 1"),
        (_reserved_default, r"families\.TiDE: .*defaults sets \['input_size'\], which"),
        (_wrong_loss, r"families\.SeasonalNaive: .*'MQLoss' is not one of \['native', 'conformal'\]"),
        (_static_to_statsforecast, r"families\.AutoTheta: .*future exogenous regressors only"),
        (_missing_group, r"missing \['weekly'\]"),
        (_too_short_for_conformal, r"frequency_groups\.hourly: min_points 30 .* CrostonOptimized"),
    ],
)
def test_malformed_entries_are_named_with_the_file(tmp_path: Path, corrupt, message: str):
    content = _bundled()
    corrupt(content)
    path = _write(tmp_path, content)
    with pytest.raises(CatalogError, match=message) as error:
        load_catalog(path)
    assert str(path) in str(error.value)


def test_unparsable_and_missing_files_name_the_file(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("families: [unclosed")
    with pytest.raises(CatalogError, match=r"broken\.yaml: cannot parse"):
        load_catalog(broken)
    with pytest.raises(CatalogError, match=r"absent\.yaml: cannot read"):
        load_catalog(tmp_path / "absent.yaml")


def test_exponents_without_a_dot_are_numbers(tmp_path: Path):
    path = tmp_path / "catalog.yaml"
    path.write_text(BUNDLED_CATALOG.read_text().replace("low: 1.0e-4", "low: 1e-4"))
    assert load_catalog(path).family("NHITS").search_space["learning_rate"].low == 1e-4


def test_fingerprint_follows_what_changes_forecasts(tmp_path: Path):
    content = _bundled()
    path = _write(tmp_path, content)  # same content, different layout and no comments
    assert load_catalog(path).fingerprint() == CATALOG.fingerprint()
    assert len(CATALOG.fingerprint()) == 64

    content["families"]["NHITS"]["description"] = "reworded"
    assert load_catalog(_write(tmp_path, content)).fingerprint() == CATALOG.fingerprint()

    content["families"]["NHITS"]["defaults"]["learning_rate"] = 2e-3
    changed = load_catalog(_write(tmp_path, content))  # the edited file is read again
    assert changed.family("NHITS").defaults["learning_rate"] == 2e-3
    assert changed.fingerprint() != CATALOG.fingerprint()


def test_family_names_come_from_the_keys():
    assert all(isinstance(spec, FamilySpec) and spec.name == key for key, spec in CATALOG.families.items())
