"""Partition keys for series ids, whatever characters the ids carry.

Real ids hold commas, slashes, pipes, spaces and accents ("Store, North", "T-shirt S/M"), which
Dagster reserves in partition keys or which make awkward file and URL names. A plain id
(letters, digits, `_ . -`) is its own key, so keys stay readable; any other id gets a readable
slug plus a hash of the exact id (`Store_North~5c0f6e1d2a9b`). Plain ids never contain `~`
and the hash covers the whole id, so two ids never share a key. The series table maps keys
back to ids; users always see the id.

No Dagster import here: the ingestion front door derives keys before anything builds partitions.
"""

from __future__ import annotations

import hashlib

import polars as pl

MAX_SERIES_ID_LENGTH = 200
# Characters refused in series ids and column names (a regex for both polars and `re`): C0 and C1
# controls (NUL, tab, newline, escape, CSI) break lines and drive terminals; line separators and
# bidirectional overrides make shown text read differently from what is stored.
UNSAFE_CHARACTERS = r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
UNSAFE_CHARACTERS_NAMED = "a control character (NUL, tab, newline, escape) or a bidirectional override"
_PLAIN_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
_SLUG_LENGTH = 48
_HASH_LENGTH = 12


def _id_hash(series_id: str) -> str:
    return hashlib.sha256(series_id.encode("utf-8")).hexdigest()[:_HASH_LENGTH]


def partition_keys(series_ids: pl.Series) -> pl.Series:
    """The partition key of each id (vectorized; hashes are computed once per distinct id)."""
    frame = pl.DataFrame({"series_id": series_ids.cast(pl.Utf8)})
    distinct = frame.unique("series_id").filter(pl.col("series_id").is_not_null())
    hashes = pl.Series("hash", [_id_hash(value) for value in distinct["series_id"].to_list()], dtype=pl.Utf8)
    slug = (
        pl.col("series_id")
        .str.normalize("NFKD")
        .str.replace_all(r"\p{M}", "")
        .str.replace_all(r"[^A-Za-z0-9_.\-]+", "_")
        .str.replace_all(r"\.{2,}", ".")  # `...` separates partition ranges in Dagster
        .str.strip_chars("_.-")
        .str.slice(0, _SLUG_LENGTH)
    )
    keyed = distinct.with_columns(hashes).with_columns(
        pl.when(pl.col("series_id").str.contains(_PLAIN_ID) & ~pl.col("series_id").str.contains(r"\.\."))
        .then(pl.col("series_id"))
        .otherwise(pl.when(slug == "").then(pl.lit("id")).otherwise(slug) + pl.lit("~") + pl.col("hash"))
        .alias("partition_key")
    )
    return frame.join(keyed, on="series_id", how="left", maintain_order="left")["partition_key"]


def partition_key(series_id: str) -> str:
    """Scalar form of `partition_keys`."""
    return partition_keys(pl.Series([series_id]))[0]
