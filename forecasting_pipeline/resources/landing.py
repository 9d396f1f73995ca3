"""The landing folder: CSV or Parquet files in long format (`unique_id, ds, y` + drivers).

Rows are read as text so that validation, not the reader, decides what is malformed and
quarantines it with a reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import polars as pl
from dagster import ConfigurableResource

from forecasting_pipeline.schemas import UNIQUE_ID

SOURCE = "source"
SOURCE_ROW = "source_row"
_SUFFIXES = (".csv", ".parquet")


class LandingZoneResource(ConfigurableResource):
    """A folder that upstream systems drop files into."""

    path: str

    @property
    def folder(self) -> Path:
        return Path(self.path)

    def files(self) -> list[Path]:
        """Landed files in name order: later files win when they repeat a (series, ts)."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.suffix.lower() in _SUFFIXES)

    def read_rows(self, series_ids: Iterable[str] | None = None) -> pl.DataFrame:
        """All landed rows (as text), optionally only those of `series_ids`."""
        frames = [_scan(path) for path in self.files()]
        if not frames:
            return pl.DataFrame(schema={UNIQUE_ID: pl.Utf8, SOURCE: pl.Utf8, SOURCE_ROW: pl.Int64})
        lazy = pl.concat(frames, how="diagonal_relaxed")
        if series_ids is not None:
            lazy = lazy.filter(pl.col(UNIQUE_ID).is_in(sorted(set(series_ids))))
        return lazy.collect()


def _scan(path: Path) -> pl.LazyFrame:
    if path.suffix.lower() == ".csv":
        lazy = pl.scan_csv(path, infer_schema=False)
    else:
        lazy = pl.scan_parquet(path).with_columns(pl.all().cast(pl.Utf8))
    return lazy.with_row_index(SOURCE_ROW, offset=1).with_columns(
        pl.col(SOURCE_ROW).cast(pl.Int64), pl.lit(path.name).alias(SOURCE)
    )
