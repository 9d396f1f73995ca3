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
    assert settings.forecast_horizon == 24
    assert settings.partition_start == date(2016, 10, 2)
    assert settings.partition_end is None


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
    assert settings.models_dir == home / "models"
    assert settings.embedded_db_dir == home / "pgdata"


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


@pytest.mark.parametrize(
    ("raw", "cadence"), [("daily", "daily"), ("Monthly", "monthly"), (" weekly ", "weekly")]
)
def test_cadence_is_case_and_space_insensitive(home: Path, raw: str, cadence: str):
    assert load_settings({"FP_HOME": str(home), "FP_DATE_CADENCE": raw}).date_cadence == cadence


def test_unknown_cadence_is_rejected_by_name(home: Path):
    with pytest.raises(SettingsError, match="fortnightly"):
        load_settings({"FP_HOME": str(home), "FP_DATE_CADENCE": "fortnightly"})


def test_partition_window_from_environment(home: Path):
    settings = load_settings(
        {"FP_HOME": str(home), "FP_PARTITION_START": "2020-03-01", "FP_PARTITION_END": "2020-06-01"}
    )
    assert settings.partition_start == date(2020, 3, 1)
    assert settings.partition_end == date(2020, 6, 1)


@pytest.mark.parametrize("end", ["2016-10-02", "2016-09-30"])
def test_partition_end_must_come_after_start(home: Path, end: str):
    with pytest.raises(SettingsError, match="FP_PARTITION_END"):
        load_settings({"FP_HOME": str(home), "FP_PARTITION_END": end})


@pytest.mark.parametrize("variable", ["FP_PARTITION_START", "FP_PARTITION_END"])
def test_malformed_dates_are_rejected(home: Path, variable: str):
    with pytest.raises(SettingsError, match=variable):
        load_settings({"FP_HOME": str(home), variable: "02/10/2016"})


def test_horizon_is_read_as_an_integer(home: Path):
    assert load_settings({"FP_HOME": str(home), "FP_FORECAST_HORIZON": "48"}).forecast_horizon == 48


@pytest.mark.parametrize("raw", ["abc", "1.5", "", "0", "-3"])
def test_horizon_must_be_a_positive_integer(home: Path, raw: str):
    with pytest.raises(SettingsError, match="FP_FORECAST_HORIZON"):
        load_settings({"FP_HOME": str(home), "FP_FORECAST_HORIZON": raw})


def test_settings_are_immutable(home: Path):
    settings = load_settings({"FP_HOME": str(home)})
    with pytest.raises(AttributeError):
        settings.forecast_horizon = 12  # type: ignore[misc]
