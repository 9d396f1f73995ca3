"""forecasting-pipeline: time-series forecasting as a partitioned Dagster asset graph."""

import warnings
from importlib.metadata import PackageNotFoundError, version

# BackfillPolicy.single_run() and MultiToSingleDimensionPartitionMapping are how a backfill of
# many series runs as one vectorized run and how window-level assets read series × date cells.
# Dagster marks them beta; they are its documented way, so the warnings are noise at every load.
warnings.filterwarnings("ignore", message=r"(Class|Parameter) `\w+`.* is currently in beta")

try:
    __version__ = version("forecasting-pipeline")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
