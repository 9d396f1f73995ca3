"""Asset modules, one per pipeline stage."""

import warnings

from dagster import BetaWarning

# BackfillPolicy.single_run() and MultiToSingleDimensionPartitionMapping are how a backfill of
# many series runs as one vectorized run and how window-level assets read series × date cells.
# They are marked beta but are the documented way, so their warnings are noise at every load.
warnings.filterwarnings("ignore", category=BetaWarning)
