"""The embedded default: a real PostgreSQL started from a folder, reachable, and stoppable."""

from __future__ import annotations

import shutil

from sqlalchemy import create_engine, text

from forecasting_pipeline.storage.embedded import (
    start_embedded_server,
    stop_embedded_server,
    with_psycopg2_driver,
)
from forecasting_pipeline_tests.conftest import _scratch_dir


def test_embedded_server_starts_serves_and_stops():
    data_dir = _scratch_dir("fp-embedded-") / "pgdata"
    url = start_embedded_server(data_dir)
    assert url.startswith("postgresql+psycopg2://")
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SHOW server_version")).scalar().startswith("16")
    engine.dispose()
    # A second start reuses the running server rather than failing on the folder.
    assert start_embedded_server(data_dir) == url
    assert stop_embedded_server(data_dir) is True
    assert stop_embedded_server(data_dir) is False
    shutil.rmtree(data_dir.parent, ignore_errors=True)


def test_bare_postgresql_urls_get_the_psycopg2_driver():
    assert with_psycopg2_driver("postgresql://u:p@h:5432/d") == "postgresql+psycopg2://u:p@h:5432/d"
    assert with_psycopg2_driver("postgresql+psycopg2://u@h/d") == "postgresql+psycopg2://u@h/d"
