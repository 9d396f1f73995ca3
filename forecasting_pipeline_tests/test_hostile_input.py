"""User story: whatever a landed file, a series id or a column name carries (SQL, quotes, path
separators, control characters, bytes that are not UTF-8, ten thousand characters) ingestion
never crashes and never runs it as SQL: it is stored exactly, or refused with a reason, and shown
as it is in the terminal, the HTML report and the Dagster UI. `ingest` reads only inside its
allowed roots, models load only from the project's own registry, and a password in the
environment reaches no output, log, run tag, metadata or MLflow record."""

from __future__ import annotations

import ast
import csv
import gzip
import hashlib
import io
import os
import random
import re
import shutil
import sqlite3
import subprocess
import zlib
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import date, timedelta
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from sqlalchemy import create_engine, make_url, text

from forecasting_pipeline import operations
from forecasting_pipeline.ingestion.reader import RAGGED_SCHEMA, SOURCE_ROW, read_landed_file
from forecasting_pipeline.ingestion.roots import PathOutsideRootsError
from forecasting_pipeline.ingestion.validation import validate_rows
from forecasting_pipeline.series_keys import MAX_SERIES_ID_LENGTH, UNSAFE_CHARACTERS, partition_keys
from forecasting_pipeline.settings import REPO_ROOT, load_settings
from forecasting_pipeline_tests.cli_runs import run_cli, user_env
from forecasting_pipeline_tests.conftest import _scratch_dir

# Bounded and reproducible: the same examples on every run, none remembered in the repository
# (Hypothesis' caches go to the session's scratch FP_HOME, removed when the session ends).
set_hypothesis_home_dir(Path(os.environ["FP_HOME"]) / "hypothesis")
PROPERTY = settings(
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Valid ids that would do harm if anything built SQL, paths, Markdown or HTML from them.
HOSTILE_IDS = [
    "Robert'); DROP TABLE forecasting.observations;--",
    "' OR '1'='1",
    '"; DELETE FROM forecasting.series WHERE ""="',
    "back\\slash \\' \\\\",
    "100% $$dollar$$ $tag$ %s %(name)s :name ?",
    "../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "a...b|c,d[e]{f}",
    "a|b",
    "a,b",
    "\\N",
    "NULL",
    "NaN",
    "<script>alert(1)</script>",
    "[x](javascript:alert(1)) *b* `c` ~d~ &amp;",
    "Ünïcødé 東京 🚀 עברית",
]
_FRAGMENTS = "'\";--%$\\/.|,<>[]()`*~&:?é東🚀 "
HOSTILE_IDS.append(("".join(_FRAGMENTS[i % len(_FRAGMENTS)] for i in range(MAX_SERIES_ID_LENGTH - 2))) + "ok")
assert all(len(series) <= MAX_SERIES_ID_LENGTH and series == series.strip() for series in HOSTILE_IDS)
HOSTILE_DRIVER = "temp'); DROP TABLE forecasting.series;--/../<b>|$$"
# Ids refused row by row, each with the reason it must get.
CONTROL = "control character"
_RANDOM = random.Random(12)
LONG_ID = "".join(_RANDOM.choice("abcXYZ019'\",;%$\\/|<>~ é東") for _ in range(10_000))
REFUSED_IDS = {
    "tab\tid": CONTROL,
    "line\nbreak": CONTROL,
    "esc\x1b[2Jclear": CONTROL,
    "csi\x9b31m": CONTROL,
    "bidi\u202eevil": CONTROL,
    "sep\u2028line": CONTROL,
    LONG_ID: f"longer than {MAX_SERIES_ID_LENGTH}",
}
CANARY = "canary-s3cret-7f3a"
# Landed with spaces around it, stored trimmed: `forecast --output` must still find it.
PADDED = "  padded id  "


def _write_csv(
    path: Path, header: list[str], rows: list[list[str]], quoting: int = csv.QUOTE_MINIMAL
) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, quoting=quoting)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _daily_rows(series_ids: list[str], start: date, days: int, driver: bool = True) -> list[list[str]]:
    rows = []
    for n, series in enumerate(series_ids):
        for d in range(days):
            value = 10 + n + 3 * ((d % 7) - 3) / 3 + 0.05 * d
            rows.append(
                [series, (start + timedelta(days=d)).isoformat(), f"{value:.3f}"]
                + ([f"{20 + (d * 7 + n) % 11:.1f}"] if driver else [])
            )
    return rows


# --- the parser, property-based ------------------------------------------------------------------

_HOSTILE_PIECES = [
    "'", '"', "\\", ";", "--", "/*", "%", "%s", "$$", "../", "..\\", "/", "|", ",", "...", "~", "\t",
    "<script>", "&amp;", "\x00", "\n", "\r", "\r\n", "\x1b[31m", "\x9b", "\u202e", "\u2028", "\ufeff",
    "é", "東京", "🚀", " ", "NULL", "\\N", "NaN", "inf", "1e308", "2024-01-01", "2024-01-02T03:04:05Z",
]  # fmt: skip
hostile_text = st.lists(st.one_of(st.sampled_from(_HOSTILE_PIECES), st.text(max_size=4)), max_size=5).map(
    "".join
)
_PREFIXES = [b"", b"unique_id,ds,y\n", b"\xef\xbb\xbfunique_id;ds;y\r\n", b"\xff\xfe", b"\x1f\x8b", b"PAR1"]
landed_bytes = st.one_of(
    st.binary(max_size=300),
    st.tuples(st.sampled_from(_PREFIXES), st.binary(max_size=300)).map(b"".join),
    st.lists(hostile_text, min_size=3, max_size=3).map(
        lambda cells: ("unique_id,ds,y\n" + ",".join(cells)).encode()
    ),
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile")


def _assert_accounted_for(read) -> None:
    """A read file is rows (all text), or one short line saying why not; never an exception."""
    if read.rejected_reason is not None:
        assert read.rows is None
        assert read.rejected_reason.strip() and "\n" not in read.rejected_reason
        assert len(read.rejected_reason) <= 500
        return
    assert read.rows.schema[SOURCE_ROW] == pl.Int64
    assert all(dtype == pl.Utf8 for name, dtype in read.rows.schema.items() if name != SOURCE_ROW)
    assert read.ragged.schema == pl.Schema(RAGGED_SCHEMA)
    numbers = sorted(read.rows[SOURCE_ROW].to_list() + read.ragged[SOURCE_ROW].to_list())
    assert numbers == list(range(1, read.rows_read + 1))
    checked = validate_rows(read.rows)
    assert checked.valid.height + checked.quarantined.height == read.rows.height
    assert checked.quarantined["reason"].null_count() == 0


@PROPERTY
@given(data=landed_bytes, suffix=st.sampled_from([".csv", ".csv.gz", ".parquet"]), compress=st.booleans())
def test_any_bytes_are_read_as_text_rows_or_refused_in_one_line(scratch, data, suffix, compress):
    path = scratch / f"landed{suffix}"
    path.write_bytes(gzip.compress(data) if compress and suffix == ".csv.gz" else data)
    _assert_accounted_for(read_landed_file(path))


@PROPERTY
@given(
    cells=st.lists(st.lists(hostile_text, min_size=4, max_size=4), min_size=1, max_size=10),
    driver=hostile_text,
)
# A quoted name full of another delimiter must not decide the file's delimiter.
@example(cells=[["a;b", "2024-01-01", "1", "2|3"]], driver="price; EUR; per; MWh, incl. tax")
@example(cells=[["tab\tid", "2024-01-01", "1", "2"]], driver="a\tb\tc\td\te")
def test_every_csv_cell_arrives_exactly_and_every_row_is_accepted_or_refused_with_a_reason(
    scratch, cells, driver
):
    # Every field quoted, as a writer of hostile names must: unquoted, `a;b;c;d` is ambiguous.
    path = _write_csv(scratch / "cells.csv", ["unique_id", "ds", "y", driver], cells, csv.QUOTE_ALL)
    read = read_landed_file(path)
    name = driver.replace("\ufeff", "").strip() or "column_4"
    if any("\x00" in cell for row in cells for cell in [*row, driver]):
        assert "NUL byte" in read.rejected_reason
        return
    if "\n" in driver or "\r" in driver:
        assert "a column name cannot span lines" in read.rejected_reason
        return
    if re.search(UNSAFE_CHARACTERS, name):
        assert "the name of column 4 contains a control character" in read.rejected_reason
        return
    if name in ("unique_id", "ds", "y", SOURCE_ROW):
        assert name in read.rejected_reason
        return
    assert read.rejected_reason is None, read.rejected_reason
    # Exactly as written (an empty field is CSV's null), whatever quotes, delimiters or bytes.
    landed = read.rows.sort(SOURCE_ROW).drop(SOURCE_ROW)
    assert landed.columns == ["unique_id", "ds", "y", name]
    assert landed.rows() == [tuple(cell if cell != "" else None for cell in row) for row in cells]

    checked = validate_rows(read.rows)
    valid, refused = checked.valid, checked.quarantined
    assert sorted(valid[SOURCE_ROW].to_list() + refused[SOURCE_ROW].to_list()) == list(
        range(1, len(cells) + 1)
    )
    assert refused["reason"].null_count() == 0
    for row in valid.iter_rows(named=True):
        landed_id = cells[row[SOURCE_ROW] - 1][0]
        assert row["unique_id"] == pl.Series([landed_id]).str.strip_chars()[0]  # only trimmed
        assert 0 < len(row["unique_id"]) <= MAX_SERIES_ID_LENGTH
        assert not re.search(UNSAFE_CHARACTERS, row["unique_id"])
        assert row["y"] == float(cells[row[SOURCE_ROW] - 1][2].strip())


_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
valid_ids = (
    st.text(
        alphabet=st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="\u2028\u2029\u202e"),
        min_size=1,
        max_size=MAX_SERIES_ID_LENGTH,
    )
    .map(str.strip)
    .filter(bool)
)


@PROPERTY
@given(ids=st.lists(st.one_of(valid_ids, st.sampled_from(HOSTILE_IDS)), min_size=1, max_size=20, unique=True))
def test_partition_keys_are_distinct_safe_for_dagster_and_readable(ids):
    keys = partition_keys(pl.Series(ids)).to_list()
    assert len(set(keys)) == len(ids)
    for series, key in zip(ids, keys, strict=True):
        # No Dagster separator (`|` of multi-partition keys, `...` of ranges, `,` `[` `]`), no
        # path separator, no control character, short enough for a file or URL name.
        assert re.fullmatch(r"[A-Za-z0-9_.\-~]{1,100}", key), key
        assert ".." not in key
        if _PLAIN.fullmatch(series) and ".." not in series:
            assert key == series
        else:
            assert key.endswith("~" + hashlib.sha256(series.encode()).hexdigest()[:12])


# --- end to end into PostgreSQL -------------------------------------------------------------------


def _tables(engine) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                text(
                    "SELECT table_schema || '.' || table_name FROM information_schema.tables "
                    "WHERE table_schema IN ('public', 'forecasting', 'optuna')"
                )
            ).scalars()
        )


class _MarkdownCells(HTMLParser):
    """Text of each table row of rendered Markdown, as a reader of the page sees it."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _rendered_table(markdown: str) -> list[list[str]]:
    from markdown_it import MarkdownIt

    parser = _MarkdownCells()
    parser.feed(MarkdownIt("commonmark").enable("table").render(markdown))
    return parser.rows


def _parquet(**columns: list) -> bytes:
    """A one-row Parquet file of `columns` (text, or raw bytes as a binary column), ds and y."""
    buffer = io.BytesIO()
    pl.DataFrame({**columns, "ds": ["2016-10-05"], "y": [1.0]}).write_parquet(buffer)
    return buffer.getvalue()


def test_hostile_ids_and_column_names_are_stored_exactly_or_refused_with_a_reason(
    deployment, instance, db_engine
):
    from dagster import DagsterEventType

    landing = deployment.settings.landing_dir
    landing.mkdir(parents=True, exist_ok=True)
    tables_before = _tables(db_engine)
    start = date(2016, 10, 3)
    rows = _daily_rows(HOSTILE_IDS, start, 30) + [[series, "2016-10-05", "1", "2"] for series in REFUSED_IDS]
    _write_csv(landing / "hostile.csv", ["unique_id", "ds", "y", HOSTILE_DRIVER], rows)
    # Landed columns named like validation's own working columns are data like any other.
    _write_csv(
        landing / "collisions.csv",
        ["unique_id", "ds", "y", "x", "_d_x", "_id", "reason"],
        [["collide", (start + timedelta(days=d)).isoformat(), "1", "2", "3", "u", "r"] for d in range(30)],
    )
    refused_files = {
        "nul.csv": (b"unique_id,ds,y\nnul\x00id,2016-10-05,1\n", "NUL byte"),
        "nul.parquet": (_parquet(unique_id=["nul\x00id"]), "holds a NUL character (row 1)"),
        "latin1.csv": ("unique_id,ds,y\ncaf\u00e9,2016-10-05,1\n".encode("latin-1"), "not UTF-8"),
        "long_column.csv": (
            f"unique_id,ds,y,{'c' * 10_000}\na,2016-10-05,1,2\n".encode(),
            "10000 characters",
        ),
        "escape_column.csv": (
            b"unique_id,ds,y,\x1b[31mred\na,2016-10-05,1,2\n",
            "contains a control character",
        ),
        "binary_ids.parquet": (_parquet(unique_id=[b"caf\xe9"]), "has type large_binary; expected text"),
        "binary_note.parquet": (_parquet(unique_id=["note"], note=[b"caf\xe9"]), "cannot be read as text"),
    }
    for name, (content, _) in refused_files.items():
        (landing / name).write_bytes(content)

    summary = operations.ingest(instance, deployment, progress=lambda _: None)

    outcomes = {outcome.path.name: outcome for outcome in summary.files}
    for name, (_, reason) in refused_files.items():
        assert outcomes[name].status == "rejected" and reason in outcomes[name].message, outcomes[name]
        assert (deployment.settings.rejected_dir / name).exists()
    assert {outcomes[n].status for n in ("hostile.csv", "collisions.csv")} == {"staged"}

    with db_engine.connect() as conn:
        stored = dict(
            conn.execute(
                text("SELECT series_id, partition_key FROM forecasting.series WHERE series_id = ANY(:ids)"),
                {"ids": HOSTILE_IDS},
            ).all()
        )
        counts = dict(
            conn.execute(
                text(
                    "SELECT series_id, count(*) FROM forecasting.observations WHERE series_id = ANY(:ids) "
                    "GROUP BY series_id"
                ),
                {"ids": HOSTILE_IDS},
            ).all()
        )
        driver_keys = set(
            conn.execute(
                text(
                    "SELECT DISTINCT jsonb_object_keys(drivers) FROM forecasting.observations "
                    "WHERE series_id = ANY(:ids)"
                ),
                {"ids": HOSTILE_IDS},
            ).scalars()
        )
        quarantined = dict(
            conn.execute(
                text(
                    "SELECT q.series_id, q.reason FROM forecasting.quarantine q "
                    "JOIN forecasting.landed_files f USING (file_id) "
                    "WHERE f.file_name = 'hostile.csv'"
                )
            ).all()
        )
        collide = conn.execute(
            text(
                "SELECT o.drivers, s.attributes FROM forecasting.observations o "
                "JOIN forecasting.series s USING (series_id) WHERE series_id = 'collide' LIMIT 1"
            )
        ).one()
    # Stored byte for byte, each under its own safe partition key, every row of it.
    assert stored == dict(zip(HOSTILE_IDS, partition_keys(pl.Series(HOSTILE_IDS)).to_list(), strict=True))
    assert counts == dict.fromkeys(HOSTILE_IDS, 30)
    assert driver_keys == {HOSTILE_DRIVER}
    assert set(stored.values()) <= set(instance.get_dynamic_partitions("series"))
    # Refused with their reason, and kept exactly as landed (the 10,000 characters too).
    assert set(quarantined) == set(REFUSED_IDS)
    for series, reason in REFUSED_IDS.items():
        assert reason in quarantined[series], (series[:40], quarantined[series])
    assert collide.drivers == {"x": 2.0, "_d_x": 3.0} and collide.attributes == {"_id": "u", "reason": "r"}

    # The UI's Markdown shows each id as stored, in its own cell.
    materializations = [
        record.event_log_entry.asset_materialization
        for run_id in summary.run_ids
        for record in instance.get_records_for_run(
            run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
        ).records
    ]
    metadata = [m.metadata for m in materializations if m.asset_key.path == ["raw_observations"]]
    assert metadata
    shown: dict[str, str] = {}
    changes: list[list[str]] = []
    for entry in metadata:
        shown.update({key: series for key, series in _rendered_table(entry["series_ids"].value)[1:]})
        changes += _rendered_table(entry["largest_changes"].value)[1:]
    derived = {stored[series]: series for series in HOSTILE_IDS if stored[series] != series}
    assert {key: shown[key] for key in derived} == derived
    assert changes and all(len(row) == 4 for row in changes)
    assert {row[0] for row in changes} <= {*HOSTILE_IDS, "collide"}

    assert _tables(db_engine) == tables_before
    with db_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM forecasting.observations")).scalar_one() > 0


# --- ingest reads only inside its roots ------------------------------------------------------------


def test_land_paths_refuses_traversal_links_and_folders_that_lead_out_and_lands_nothing(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    landing = root / "landing"
    (root / "drop").mkdir(parents=True)
    outside.mkdir()
    secret = outside / "secret.csv"
    secret.write_text("unique_id,ds,y\nsecret,2016-10-05,1\n")
    good = root / "good.csv"
    good.write_text("unique_id,ds,y\ngood,2016-10-05,1\n")
    (root / "link.csv").symlink_to(secret)
    (root / "drop" / "inner.csv").symlink_to(secret)
    (root / "folder_link").symlink_to(outside, target_is_directory=True)
    roots = (root,)

    refused = {
        "traversal": [good, root / ".." / "outside" / "secret.csv"],
        "link": [root / "link.csv"],
        "a link inside a folder": [root / "drop"],
        "a linked folder": [root / "folder_link"],
        "absolute": [Path("/etc/hostname")],
    }
    for case, paths in refused.items():
        with pytest.raises(PathOutsideRootsError, match="outside the folders ingestion may read") as error:
            operations.land_paths(paths, landing, roots)
        assert "FP_INGEST_ROOTS" in str(error.value), case
        assert not landing.exists() or not any(landing.iterdir()), f"{case}: something was landed"
    with pytest.raises(PathOutsideRootsError, match=f"link.csv \\(leads to {re.escape(str(secret))}\\)"):
        operations.land_paths([root / "link.csv"], landing, roots)

    assert operations.land_paths([good, root / "drop" / ".." / "good.csv"], landing, roots) == []
    assert sorted(p.name for p in landing.iterdir()) == ["good.csv"]


def test_the_roots_default_to_the_working_directory_and_fp_home_and_are_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    home = tmp_path / "home"
    default = load_settings({"FP_HOME": str(home)})
    assert default.allowed_ingest_roots == (tmp_path.resolve(), home.resolve(), (home / "landing").resolve())
    listed = load_settings(
        {"FP_HOME": str(home), "FP_INGEST_ROOTS": os.pathsep.join(["alias", "", str(tmp_path / "x" / "..")])}
    )
    assert listed.ingest_roots == ((tmp_path / "real").resolve(), tmp_path.resolve())


def test_ingest_refuses_a_path_outside_the_roots_with_exit_4_and_lands_nothing(fresh_database, tmp_path):
    home = _scratch_dir("fp-hostile-roots-")
    url = fresh_database()
    env = user_env(home, url)
    env.pop("FP_INGEST_ROOTS")  # the default: the working directory and FP_HOME
    inside = _write_csv(home / "inside.csv", ["unique_id", "ds", "y"], [["inside", "2024-01-01", "1"]])
    outside = _write_csv(tmp_path / "outside.csv", ["unique_id", "ds", "y"], [["outside", "2024-01-01", "1"]])
    (home / "link.csv").symlink_to(outside)

    result = run_cli(env, "ingest", str(inside), str(home / "link.csv"), timeout=300, cwd=home)
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"error: refused to read {home / 'link.csv'} (leads to {outside.resolve()})" in result.stderr
    assert "hint:" in result.stderr and "FP_INGEST_ROOTS" in result.stderr
    landing = home / "landing"
    assert not landing.exists() or not any(landing.iterdir())
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM forecasting.landed_files")).scalar_one() == 0
    engine.dispose()
    shutil.rmtree(home, ignore_errors=True)


def test_a_link_that_leads_out_of_the_landing_folder_is_rejected_unread(
    deployment, instance, db_engine, tmp_path
):
    landing = deployment.settings.landing_dir
    landing.mkdir(parents=True, exist_ok=True)
    secret = _write_csv(
        tmp_path / "secret.csv", ["unique_id", "ds", "y"], [["secret-series", "2016-10-05", "1"]]
    )
    inside = _write_csv(
        deployment.settings.home / "inside.csv",
        ["unique_id", "ds", "y"],
        _daily_rows(["linked-inside"], date(2016, 10, 3), 20, driver=False),
    )
    (landing / "leads_out.csv").symlink_to(secret)
    (landing / "leads_in.csv").symlink_to(inside)

    summary = operations.ingest(instance, deployment, progress=lambda _: None)

    outcomes = {outcome.path.name: outcome for outcome in summary.files}
    assert outcomes["leads_out.csv"].status == "rejected"
    assert (
        "leads outside the folders ingestion may read (FP_INGEST_ROOTS): not read"
        in outcomes["leads_out.csv"].message
    )
    assert str(secret) not in outcomes["leads_out.csv"].message
    assert outcomes["leads_in.csv"].status == "staged"  # a link that stays inside is data like any file
    assert (deployment.settings.rejected_dir / "leads_out.csv").is_symlink()
    with db_engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM forecasting.landed_files WHERE file_name = 'leads_out.csv'")
            ).scalar_one()
            == 0
        )
        assert (
            conn.execute(
                text("SELECT count(*) FROM forecasting.quarantine WHERE raw_row::text LIKE '%secret-series%'")
            ).scalar_one()
            == 0
        )
        series = set(conn.execute(text("SELECT series_id FROM forecasting.series")).scalars())
    assert "linked-inside" in series and "secret-series" not in series


# --- the CLI shows them, and keeps the environment's secrets ----------------------------------------


@dataclass(frozen=True)
class CliRound:
    scratch: Path
    home: Path
    database_url: str
    mlflow_url: str
    mlflow_store: Path
    forecast: subprocess.CompletedProcess
    leaderboard: subprocess.CompletedProcess
    report: subprocess.CompletedProcess
    output: Path
    report_file: Path


def _with_canary(url: str) -> str:
    return make_url(url).set(password=CANARY).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def cli_round(fresh_database) -> Iterator[CliRound]:
    """One user's session with hostile ids and a password in every secret the environment holds:
    forecast a file, ask for one hostile series' leaderboard, write the report."""
    database_url = _with_canary(fresh_database())
    probe = create_engine(database_url)
    try:
        with probe.connect():
            pass
    except Exception:
        pytest.skip("the test server checks passwords; the canary needs one that accepts any (trust)")
    finally:
        probe.dispose()
    scratch = _scratch_dir("fp-hostile-cli-")
    home = scratch / "home"
    # The tracking URI carries the canary too, in its path (a SQLite store has no password): any
    # place that records the URI shows it. Set, it reaches the MLflow resource as an EnvVar.
    mlflow_store = scratch / CANARY / "mlflow.db"
    mlflow_store.parent.mkdir()
    mlflow_url = f"sqlite:///{mlflow_store}"
    source = _write_csv(
        scratch / "hostile.csv",
        ["unique_id", "ds", "y", HOSTILE_DRIVER],
        _daily_rows([*HOSTILE_IDS, PADDED], date(2024, 1, 1), 60),
    )
    env = user_env(
        home,
        database_url,
        MLFLOW_TRACKING_URI=mlflow_url,
        MLFLOW_TRACKING_PASSWORD=CANARY,
        MLFLOW_TRACKING_TOKEN=CANARY,
        FP_SOURCE_URL=database_url,
        FP_SOURCE_QUERY="public.shop_sales",
    )

    def cli(*args: str) -> subprocess.CompletedProcess:
        # From the scratch folder: MLflow puts a SQL store's artifacts under ./mlruns.
        return run_cli(env, *args, cwd=scratch)

    output, report_file = scratch / "forecasts.csv", scratch / "report.html"
    forecast = cli(
        "forecast", "--input", str(source), "--preset", "fast", "--max-steps", "5", "--horizon", "7",
        "--output", str(output),
    )  # fmt: skip
    assert forecast.returncode == 0, forecast.stdout[-3000:] + forecast.stderr[-3000:]
    leaderboard = cli("leaderboard", f"--series={HOSTILE_IDS[0]}")
    report = cli("report", "--output", str(report_file))
    yield CliRound(
        scratch,
        home,
        database_url,
        mlflow_url,
        mlflow_store,
        forecast,
        leaderboard,
        report,
        output,
        report_file,
    )
    shutil.rmtree(scratch, ignore_errors=True)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.texts: list[str] = []
        self.attributes: list[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        self.tags.add(tag)
        self.attributes.extend(value or "" for _, value in attrs)

    def handle_data(self, data: str) -> None:
        self.texts.append(data)


def test_hostile_ids_are_forecast_and_shown_exactly_in_the_terminal_the_csv_and_the_report(cli_round):
    for result in (cli_round.forecast, cli_round.leaderboard, cli_round.report):
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert "\x1b" not in result.stdout + result.stderr  # nothing drives the terminal
    lines = cli_round.forecast.stdout.splitlines()
    for series in HOSTILE_IDS:
        assert any(line.startswith(series + " ") for line in lines), f"{series!r} not shown as stored"
    written = pl.read_csv(cli_round.output, infer_schema=False)
    assert set(written["unique_id"]) == {*HOSTILE_IDS, PADDED.strip()}
    assert f"series {HOSTILE_IDS[0]}, by mase" in cli_round.leaderboard.stdout

    page = _Page()
    page.feed(cli_round.report_file.read_text(encoding="utf-8"))
    assert "script" not in page.tags
    shown = set(page.texts)
    assert set(HOSTILE_IDS) <= shown, set(HOSTILE_IDS) - shown
    assert HOSTILE_DRIVER in shown
    assert not any(a.lower().startswith("javascript:") for a in page.attributes)

    engine = create_engine(cli_round.database_url)
    with engine.connect() as conn:
        stored = set(conn.execute(text("SELECT series_id FROM forecasting.series")).scalars())
        published = conn.execute(
            text("SELECT count(DISTINCT series_id) FROM forecasting.published_forecasts")
        )
        assert published.scalar_one() == len(HOSTILE_IDS) + 1
    engine.dispose()
    assert stored == {*HOSTILE_IDS, PADDED.strip()}


def _canary_rows(url: str) -> tuple[dict[str, int], int, int]:
    """Rows holding the canary in every table of a database (each row as text), plus the
    zlib-compressed Dagster snapshots (job and resource definitions the UI shows); also how many
    tables and snapshots were looked at."""
    engine = create_engine(url)
    found: dict[str, int] = {}
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                text(
                    "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = "
                    "'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')"
                )
            ).all()
            quote = conn.dialect.identifier_preparer.quote
            for schema, table in tables:
                name = f"{quote(schema)}.{quote(table)}"
                hits = conn.execute(
                    text(f"SELECT count(*) FROM {name} t WHERE t::text LIKE :pattern"),
                    {"pattern": f"%{CANARY}%"},
                ).scalar_one()
                if hits:
                    found[name] = hits
            snapshots = 0
            if ("public", "snapshots") in tables:
                for (body,) in conn.execute(text("SELECT snapshot_body FROM public.snapshots")):
                    snapshots += 1
                    if CANARY.encode() in zlib.decompress(body):
                        key = "public.snapshots (decompressed)"
                        found[key] = found.get(key, 0) + 1
    finally:
        engine.dispose()
    return found, len(tables), snapshots


def test_secrets_from_the_environment_reach_no_output_log_tag_metadata_or_mlflow_record(
    cli_round, monkeypatch
):
    for result in (cli_round.forecast, cli_round.leaderboard, cli_round.report):
        assert CANARY not in result.stdout + result.stderr

    # Run records, tags, event log (metadata, step logs, errors), snapshots, domain and Optuna rows.
    found, tables, snapshots = _canary_rows(cli_round.database_url)
    assert found == {}
    assert tables > 40 and snapshots > 0
    # MLflow's store: experiments, runs, params, tags, registered models and their versions.
    with closing(sqlite3.connect(cli_round.mlflow_store)) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        leaked_in = [
            t for t in tables if any(CANARY in str(row) for row in conn.execute(f'SELECT * FROM "{t}"'))
        ]
        params = conn.execute("SELECT count(*) FROM params").fetchone()[0]
    assert leaked_in == []
    assert len(tables) > 10 and params > 0

    # Files: compute logs under DAGSTER_HOME, Parquet intermediates, MLflow artifacts, the calendar.
    files = [path for path in cli_round.scratch.rglob("*") if path.is_file() and not path.is_symlink()]
    leaked = [path for path in files if CANARY.encode() in path.read_bytes()]
    assert leaked == []
    assert any("compute_logs" in path.parts for path in files)
    assert any("mlruns" in path.parts for path in files)

    # The UI's instance configuration page, for an instance built from this environment.
    from dagster import DagsterInstance

    monkeypatch.setenv("FP_DATABASE_URL", cli_round.database_url)
    monkeypatch.setenv("DAGSTER_HOME", str(cli_round.home / "dagster"))
    shown = DagsterInstance.from_config(str(cli_round.home / "dagster"))
    try:
        assert "PostgresRunStorage" in shown.info_str() and CANARY not in shown.info_str()
    finally:
        shown.dispose()


# --- models load only from the project's registry ---------------------------------------------------


class _Poison:
    """Unpickling this creates a marker file: proof that something unpickled what it was handed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def test_models_load_only_from_the_projects_own_registry(cli_round, tmp_path):
    import pickle

    from mlflow import MlflowClient

    from forecasting_pipeline.resources.mlflow_tracker import MlflowTrackerResource, UntrustedModelError

    tracker = MlflowTrackerResource(tracking_uri=cli_round.mlflow_url)
    loaded = tracker.load_forecaster("models:/NHITS-daily/1")
    assert [type(model).__name__ for model in loaded.models] == ["NHITS"]

    # A folder laid out like a saved model, whose pickles would leave a marker if anyone loaded them.
    poisoned, marker = tmp_path / "poisoned", tmp_path / "unpickled"
    poisoned.mkdir()
    for name in ("configuration.pkl", "alias_to_model.pkl", "dataset.pkl", "NHITS_0.ckpt"):
        (poisoned / name).write_bytes(pickle.dumps(_Poison(marker)))
    client = MlflowClient(tracking_uri=cli_round.mlflow_url, registry_uri=cli_round.mlflow_url)
    genuine = client.get_model_version("NHITS-daily", "1")
    repointed = client.create_model_version("NHITS-daily", source=str(poisoned), run_id=genuine.run_id)
    foreign = client.create_run(client.create_experiment("someone-else", artifact_location=tmp_path.as_uri()))
    client.log_artifacts(foreign.info.run_id, str(poisoned), artifact_path="model")
    client.create_registered_model("foreign-model")
    foreign_version = client.create_model_version(
        "foreign-model", source=f"{foreign.info.artifact_uri}/model", run_id=foreign.info.run_id
    )

    refused = {
        str(poisoned): "is not a registered model of this project",
        poisoned.as_uri(): "is not a registered model of this project",
        "http://models.example.com/nhits.ckpt": "is not a registered model of this project",
        f"runs:/{genuine.run_id}/model": "is not a registered model of this project",
        "models:/../../etc/1": "is not a registered model of this project",
        f"models:/NHITS-daily/{repointed.version}": "its source is not the artifacts of its run",
        f"models:/foreign-model/{foreign_version.version}": "not registered from a run of the experiment",
        "models:/NHITS-daily/999": "not in this project's MLflow registry",
    }
    for uri, reason in refused.items():
        with pytest.raises(UntrustedModelError, match=re.escape(reason)):
            tracker.load_forecaster(uri)
    assert not marker.exists()


# Calls that turn bytes into objects (and so run code the bytes name), or fetch model artifacts.
_ALWAYS = {
    "load_model",
    "load_from_checkpoint",
    "load_checkpoint",
    "download_artifacts",
    "Unpickler",
    "read_pickle",
}
_LOAD = {"load", "loads"}
_UNPICKLING = {
    "pickle",
    "cloudpickle",
    "dill",
    "joblib",
    "torch",
    "np",
    "numpy",
    "NeuralForecast",
    "StatsForecast",
}
_SANCTIONED = {
    ("resources/mlflow_tracker.py", "NeuralForecast.load"),
    ("resources/mlflow_tracker.py", "client.download_artifacts"),
}


def test_nothing_but_the_registry_loader_unpickles_or_fetches_models():
    package = REPO_ROOT / "forecasting_pipeline"
    found: set[tuple[str, str]] = set()
    for path in package.rglob("*.py"):
        where = path.relative_to(package).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for name in [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]:
                    if name.split(".")[0] in {"pickle", "cloudpickle", "dill", "joblib"}:
                        found.add((where, f"import {name}"))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner, attr = ast.unparse(node.func.value), node.func.attr
                if attr in _ALWAYS or (attr in _LOAD and owner.split(".")[-1] in _UNPICKLING):
                    found.add((where, f"{owner}.{attr}"))
    assert found == _SANCTIONED
