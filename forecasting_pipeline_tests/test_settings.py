"""Unit tests of `load_settings`: defaults, derived folders and the errors for bad values."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from forecasting_pipeline.settings import SettingsError, load_settings


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path.resolve() / "fp-home"


def test_defaults_with_an_empty_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings({})

    expected_home = tmp_path.resolve() / ".forecasting"
    assert settings.home == expected_home
    assert settings.home.is_absolute()
    assert settings.dagster_home == expected_home / "dagster"
    assert settings.database_url is None
    assert settings.date_cadence == "weekly"
    assert settings.forecast_horizon is None  # each frequency group's horizon from the catalog
    assert settings.model_catalog is None and settings.statsforecast_n_jobs == 1
    assert settings.gpu_pool_limit is None and settings.cuda_precision == "16-mixed"
    # No pinned calendar: the first data decides it.
    assert settings.partition_start is None
    assert settings.partition_end is None
    assert settings.calendar_history_windows == 4
    assert settings.future_tolerance_hours == 24.0
    assert settings.max_failing_fraction == 0.01
    assert settings.target_min is None
    assert settings.target_max is None
    assert settings.mlflow_tracking_uri is None


def test_loading_settings_does_not_create_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    load_settings({})
    assert list(tmp_path.iterdir()) == []


def test_folders_derive_from_home(home: Path):
    settings = load_settings({"FP_HOME": str(home)})

    assert settings.home == home
    assert settings.dagster_home == home / "dagster"
    assert settings.storage_dir == home / "storage"
    assert settings.landing_dir == home / "landing"
    assert settings.rejected_dir == home / "landing" / "rejected"
    assert settings.embedded_db_dir == home / "pgdata"
    assert settings.calendar_file == home / "calendar.json"
    assert settings.mlflow_artifacts_dir == home / "mlartifacts"
    assert settings.default_mlflow_tracking_uri == f"sqlite:///{home}/mlflow.db"


def test_relative_home_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings({"FP_HOME": "deploy/fp"})
    assert settings.home == tmp_path.resolve() / "deploy" / "fp"


def test_explicit_dagster_home_wins_over_the_default(home: Path, tmp_path: Path):
    elsewhere = tmp_path.resolve() / "instance"
    settings = load_settings({"FP_HOME": str(home), "DAGSTER_HOME": str(elsewhere)})
    assert settings.dagster_home == elsewhere
    assert settings.home == home


def test_empty_database_url_means_embedded_server(home: Path):
    assert load_settings({"FP_HOME": str(home), "FP_DATABASE_URL": ""}).database_url is None
    url = "postgresql://user@db.example:5432/fp"
    assert load_settings({"FP_HOME": str(home), "FP_DATABASE_URL": url}).database_url == url


def test_mlflow_uri_is_taken_only_from_the_environment(home: Path):
    uri = "http://mlflow.example:5000"
    assert load_settings({"FP_HOME": str(home), "MLFLOW_TRACKING_URI": uri}).mlflow_tracking_uri == uri


@pytest.mark.parametrize(
    ("raw", "cadence"), [("daily", "daily"), ("Monthly", "monthly"), (" weekly ", "weekly")]
)
def test_cadence_is_case_and_space_insensitive(home: Path, raw: str, cadence: str):
    assert load_settings({"FP_HOME": str(home), "FP_DATE_CADENCE": raw}).date_cadence == cadence


def test_unknown_cadence_is_rejected_by_name(home: Path):
    with pytest.raises(SettingsError, match="fortnightly"):
        load_settings({"FP_HOME": str(home), "FP_DATE_CADENCE": "fortnightly"})


# --- a pinned `date` calendar ---------------------------------------------------------------


def test_partition_window_from_environment(home: Path):
    settings = load_settings(
        {"FP_HOME": str(home), "FP_PARTITION_START": "2020-03-01", "FP_PARTITION_END": "2020-06-01"}
    )
    assert settings.partition_start == date(2020, 3, 1)
    assert settings.partition_end == date(2020, 6, 1)


def test_a_start_alone_pins_an_open_calendar(home: Path):
    settings = load_settings({"FP_HOME": str(home), "FP_PARTITION_START": "2016-10-02"})
    assert settings.partition_start == date(2016, 10, 2)
    assert settings.partition_end is None


def test_empty_partition_start_means_calendar_from_data(home: Path):
    assert load_settings({"FP_HOME": str(home), "FP_PARTITION_START": ""}).partition_start is None


def test_partition_end_needs_a_start(home: Path):
    with pytest.raises(SettingsError, match="FP_PARTITION_END needs FP_PARTITION_START"):
        load_settings({"FP_HOME": str(home), "FP_PARTITION_END": "2020-06-01"})


@pytest.mark.parametrize("end", ["2016-10-02", "2016-09-30"])
def test_partition_end_must_come_after_start(home: Path, end: str):
    with pytest.raises(SettingsError, match="FP_PARTITION_END must be after"):
        load_settings({"FP_HOME": str(home), "FP_PARTITION_START": "2016-10-02", "FP_PARTITION_END": end})


@pytest.mark.parametrize("variable", ["FP_PARTITION_START", "FP_PARTITION_END"])
def test_malformed_dates_are_rejected(home: Path, variable: str):
    env = {"FP_HOME": str(home), "FP_PARTITION_START": "2016-10-02", variable: "02/10/2016"}
    with pytest.raises(SettingsError, match=variable):
        load_settings(env)


# --- numbers ----------------------------------------------------------------------------------


def test_horizon_is_read_as_an_integer(home: Path):
    assert load_settings({"FP_HOME": str(home), "FP_FORECAST_HORIZON": "48"}).forecast_horizon == 48


def test_an_empty_horizon_means_each_groups_own(home: Path):
    assert load_settings({"FP_HOME": str(home), "FP_FORECAST_HORIZON": ""}).forecast_horizon is None


@pytest.mark.parametrize("raw", ["abc", "1.5", "0", "-3"])
def test_horizon_must_be_a_positive_integer(home: Path, raw: str):
    with pytest.raises(SettingsError, match="FP_FORECAST_HORIZON"):
        load_settings({"FP_HOME": str(home), "FP_FORECAST_HORIZON": raw})


@pytest.mark.parametrize(("raw", "windows"), [("0", 0), ("12", 12)])
def test_calendar_history_windows(home: Path, raw: str, windows: int):
    settings = load_settings({"FP_HOME": str(home), "FP_CALENDAR_HISTORY_WINDOWS": raw})
    assert settings.calendar_history_windows == windows


@pytest.mark.parametrize("raw", ["-1", "two", "1.5"])
def test_calendar_history_windows_must_be_a_non_negative_integer(home: Path, raw: str):
    with pytest.raises(SettingsError, match="FP_CALENDAR_HISTORY_WINDOWS"):
        load_settings({"FP_HOME": str(home), "FP_CALENDAR_HISTORY_WINDOWS": raw})


@pytest.mark.parametrize(("raw", "hours"), [("0", 0.0), ("1.5", 1.5), ("48", 48.0)])
def test_future_tolerance_hours(home: Path, raw: str, hours: float):
    settings = load_settings({"FP_HOME": str(home), "FP_FUTURE_TOLERANCE_HOURS": raw})
    assert settings.future_tolerance_hours == hours


def test_future_tolerance_must_be_a_number(home: Path):
    with pytest.raises(SettingsError, match="FP_FUTURE_TOLERANCE_HOURS"):
        load_settings({"FP_HOME": str(home), "FP_FUTURE_TOLERANCE_HOURS": "a day"})


def test_empty_future_tolerance_is_not_silently_zero(home: Path):
    try:
        settings = load_settings({"FP_HOME": str(home), "FP_FUTURE_TOLERANCE_HOURS": ""})
    except SettingsError:
        return  # refusing the empty value is as good as the default
    assert settings.future_tolerance_hours == 24.0


@pytest.mark.parametrize(("raw", "fraction"), [("0", 0.0), ("0.25", 0.25), ("1", 1.0)])
def test_max_failing_fraction(home: Path, raw: str, fraction: float):
    settings = load_settings({"FP_HOME": str(home), "FP_DQ_MAX_FAILING_FRACTION": raw})
    assert settings.max_failing_fraction == fraction


@pytest.mark.parametrize("raw", ["1.5", "-0.1", "", "half"])
def test_max_failing_fraction_must_be_between_0_and_1(home: Path, raw: str):
    with pytest.raises(SettingsError, match="FP_DQ_MAX_FAILING_FRACTION"):
        load_settings({"FP_HOME": str(home), "FP_DQ_MAX_FAILING_FRACTION": raw})


def test_target_bounds(home: Path):
    settings = load_settings({"FP_HOME": str(home), "FP_TARGET_MIN": "-10", "FP_TARGET_MAX": "2.5e3"})
    assert settings.target_min == -10.0
    assert settings.target_max == 2500.0


def test_a_single_target_bound_and_empty_bounds(home: Path):
    settings = load_settings({"FP_HOME": str(home), "FP_TARGET_MIN": "0", "FP_TARGET_MAX": " "})
    assert settings.target_min == 0.0
    assert settings.target_max is None


def test_target_max_must_not_be_below_target_min(home: Path):
    with pytest.raises(SettingsError, match="FP_TARGET_MAX must not be below FP_TARGET_MIN"):
        load_settings({"FP_HOME": str(home), "FP_TARGET_MIN": "5", "FP_TARGET_MAX": "4"})


def test_equal_target_bounds_are_allowed(home: Path):
    settings = load_settings({"FP_HOME": str(home), "FP_TARGET_MIN": "5", "FP_TARGET_MAX": "5"})
    assert (settings.target_min, settings.target_max) == (5.0, 5.0)


@pytest.mark.parametrize("variable", ["FP_TARGET_MIN", "FP_TARGET_MAX"])
def test_target_bounds_must_be_numbers(home: Path, variable: str):
    with pytest.raises(SettingsError, match=variable):
        load_settings({"FP_HOME": str(home), variable: "ten"})


def test_settings_are_immutable(home: Path):
    settings = load_settings({"FP_HOME": str(home)})
    with pytest.raises(AttributeError):
        settings.forecast_horizon = 12  # type: ignore[misc]


def test_model_engine_settings_are_read_and_checked(home: Path):
    settings = load_settings(
        {
            "FP_HOME": str(home),
            "FP_MODEL_CATALOG": str(home / "catalog.yaml"),
            "FP_STATSFORECAST_N_JOBS": "2",
            "FP_GPU_POOL_LIMIT": "3",
            "FP_PRECISION": "bf16-mixed",
        }
    )
    assert settings.model_catalog == home / "catalog.yaml"
    assert (settings.statsforecast_n_jobs, settings.gpu_pool_limit, settings.cuda_precision) == (
        2,
        3,
        "bf16-mixed",
    )
    with pytest.raises(SettingsError, match="FP_PRECISION"):
        load_settings({"FP_HOME": str(home), "FP_PRECISION": "fp8"})
    with pytest.raises(SettingsError, match="FP_GPU_POOL_LIMIT"):
        load_settings({"FP_HOME": str(home), "FP_GPU_POOL_LIMIT": "0"})
