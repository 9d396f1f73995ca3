"""Unit tests of series partition keys: readable, unique, stable and valid for Dagster, whatever the id."""

from __future__ import annotations

import hashlib
import re

import polars as pl
import pytest
from dagster import MultiPartitionKey, StaticPartitionsDefinition

from forecasting_pipeline.partitions import SeriesWindow, parse_series_date_key
from forecasting_pipeline.series_keys import MAX_SERIES_ID_LENGTH, partition_key, partition_keys

HASHED = re.compile(r"^(?P<slug>[A-Za-z0-9_.\-]+)~(?P<hash>[0-9a-f]{12})$")
DAGSTER_RESERVED = set("|,[]")

AWKWARD_IDS = [
    "Store, North",
    "T-shirt S/M",
    "a|b",
    "a/b",
    "a,b",
    "a b",
    "Café Zürich",
    "Ünïcödé",
    "東京",
    "%%%",
    "[x]",
    " FR",
    "_leading_underscore",
    "x" * 150,
    "y" * MAX_SERIES_ID_LENGTH,
]


@pytest.mark.parametrize("series_id", ["FR", "A", "store_1.a-b", "2016", "Birrarung-Marr", "x" * 100])
def test_plain_ids_are_their_own_key(series_id: str):
    assert partition_key(series_id) == series_id


@pytest.mark.parametrize(
    ("series_id", "slug"),
    [
        ("Store, North", "Store_North"),
        ("T-shirt S/M", "T-shirt_S_M"),
        ("a|b", "a_b"),
        ("Birrarung Marr", "Birrarung_Marr"),
        ("Café Zürich", "Cafe_Zurich"),  # accents dropped, letters kept
        ("Ünïcödé", "Unicode"),
        ("%%%", "id"),  # nothing readable left
        ("東京", "id"),
        (" FR", "FR"),  # a leading space makes it not plain; the slug trims it
        ("_leading_underscore", "leading_underscore"),
        ("x" * 101, "x" * 48),  # longer than a plain id may be: slug cut to 48 characters
        ("x" * 150, "x" * 48),
    ],
)
def test_other_ids_get_a_readable_slug_and_a_hash(series_id: str, slug: str):
    key = partition_key(series_id)
    match = HASHED.match(key)
    assert match is not None, key
    assert match["slug"] == slug
    assert match["hash"] == hashlib.sha256(series_id.encode("utf-8")).hexdigest()[:12]


def test_keys_of_existing_deployments_never_change():
    # Keys are stored in Dagster and the series table: the derivation must not drift.
    assert partition_key("Store, North") == "Store_North~aa15b4618e99"
    assert partition_key("a|b") == "a_b~0eab8a0a3380"
    assert partition_key("Café Zürich") == "Cafe_Zurich~da74656d4d6c"


def test_ids_with_the_same_slug_get_different_keys():
    ids = ["a|b", "a/b", "a,b", "a b", "a  b", "a_b"]
    keys = partition_keys(pl.Series(ids)).to_list()
    assert keys[-1] == "a_b"  # the plain one keeps its id
    assert all(key.startswith("a_b") for key in keys)
    assert len(set(keys)) == len(ids)


def test_an_id_that_looks_like_a_derived_key_gets_its_own_key():
    derived = partition_key("Store, North")
    assert partition_key(derived) != derived
    assert HASHED.match(partition_key(derived))["slug"] == "Store_North_aa15b4618e99"


@pytest.mark.parametrize("series_id", [*AWKWARD_IDS, "FR", "store_1.a-b"])
def test_keys_are_valid_dagster_partition_keys(series_id: str):
    key = partition_key(series_id)
    assert not DAGSTER_RESERVED & set(key)
    StaticPartitionsDefinition([key])  # Dagster's own check of a key's characters
    cell = MultiPartitionKey({"series": key, "date": "2016-10-30"})
    assert parse_series_date_key(str(cell)) == SeriesWindow(window="2016-10-30", series_key=key)


@pytest.mark.parametrize("series_id", ["v1...2", "a ... b"])
def test_keys_never_hold_a_partition_range_separator(series_id: str):
    key = partition_key(series_id)
    assert "..." not in key
    StaticPartitionsDefinition([key])


def test_keys_are_stable_across_calls_and_batches():
    first = partition_keys(pl.Series(["Store, North", "FR", "a|b"])).to_list()
    second = partition_keys(pl.Series(["a|b", "Store, North"])).to_list()
    assert first[0] == second[1] == partition_key("Store, North")
    assert first[2] == second[0] == partition_key("a|b")


def test_repeated_ids_share_a_key_and_order_is_kept():
    keys = partition_keys(pl.Series(["a|b", "FR", "a|b", "FR", "Store, North"])).to_list()
    assert keys == [
        "a_b~0eab8a0a3380",
        "FR",
        "a_b~0eab8a0a3380",
        "FR",
        "Store_North~aa15b4618e99",
    ]


def test_nulls_stay_null():
    assert partition_keys(pl.Series([None, "FR", None, "a|b"])).to_list() == [
        None,
        "FR",
        None,
        "a_b~0eab8a0a3380",
    ]


def test_an_empty_series_gives_no_keys():
    keys = partition_keys(pl.Series([], dtype=pl.Utf8))
    assert keys.len() == 0
    assert keys.dtype == pl.Utf8


def test_vectorized_over_many_ids():
    ids = [f"Store {i}, Region {i % 7}" for i in range(10_000)]
    keys = partition_keys(pl.Series(ids))

    assert keys.len() == 10_000
    assert keys.n_unique() == 10_000
    assert keys.str.contains(HASHED.pattern).all()
    for position in (0, 4_321, 9_999):
        assert keys[position] == partition_key(ids[position])
    assert keys[0].startswith("Store_0_Region_0~")
