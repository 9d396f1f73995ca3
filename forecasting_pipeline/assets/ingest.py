"""`raw_observations`: landed rows of one series in one date window, validated and stored."""

import pandas as pd
from dagster import AssetExecutionContext

from forecasting_pipeline.assets.conventions import note_run, pipeline_asset
from forecasting_pipeline.ingestion.validation import validate_rows
from forecasting_pipeline.partitions import (
    last_window_end,
    parse_series_date_key,
    series_date_partitions,
    window_keys_for_timestamps,
)
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.resources.landing import SOURCE, LandingZoneResource
from forecasting_pipeline.schemas import UNIQUE_ID, WINDOW_KEY
from forecasting_pipeline.storage.observations import quarantine_rows, upsert_observations


@pipeline_asset(
    partitions_def=series_date_partitions,
    group_name="ingest",
    kinds={"polars", "postgres"},
)
def raw_observations(
    context: AssetExecutionContext, database: DatabaseResource, landing: LandingZoneResource
) -> dict[str, pd.DataFrame]:
    """Observations per series × window, upserted on (series_id, ts).

    One run takes any rectangle of partitions and reads the landed files once for all of them.
    Refused rows go to `forecasting.quarantine` with a reason; they are never dropped silently.
    """
    cells = [parse_series_date_key(key) for key in context.partition_keys]
    series_ids = sorted({cell.series_id for cell in cells})
    checked = validate_rows(landing.read_rows(series_ids), placeable_until=last_window_end())

    observations = checked.valid.to_pandas()
    observations[WINDOW_KEY] = window_keys_for_timestamps(observations["ds"])
    wanted = {(cell.series_id, cell.window) for cell in cells}
    in_run = pd.Series(
        [pair in wanted for pair in zip(observations[UNIQUE_ID], observations[WINDOW_KEY], strict=True)],
        index=observations.index,
        dtype=bool,
    )
    observations = observations[in_run]

    with database.transaction() as conn:
        note_run(context, conn)
        stored = upsert_observations(conn, observations, checked.driver_columns, context.run_id)
        refused = quarantine_rows(conn, checked.quarantined, context.run_id)

    context.log.info(
        f"{len(cells)} partitions: stored {stored} observations, quarantined {refused} rows "
        f"from {observations[SOURCE].nunique() if len(observations) else 0} landed files"
    )
    by_cell = dict(iter(observations.groupby([UNIQUE_ID, WINDOW_KEY], sort=False)))
    columns = [c for c in observations.columns if c != WINDOW_KEY]
    empty = observations.iloc[0:0][columns]
    return {
        str(cell.key): by_cell[(cell.series_id, cell.window)][columns].reset_index(drop=True)
        if (cell.series_id, cell.window) in by_cell
        else empty
        for cell in cells
    }
