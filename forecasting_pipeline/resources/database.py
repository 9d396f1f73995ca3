"""PostgreSQL access for assets: one pooled engine per database URL, bound parameters only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from dagster import ConfigurableResource
from pydantic import Field
from sqlalchemy import Connection, Engine, create_engine

from forecasting_pipeline.storage.embedded import with_psycopg2_driver


@cache
def engine_for(url: str) -> Engine:
    """Engines are process-wide: resources are rebuilt per run, pools should not be."""
    return create_engine(with_psycopg2_driver(url), pool_pre_ping=True, future=True)


class DatabaseResource(ConfigurableResource):
    """The database holding the `forecasting` domain schema (and Dagster's storage)."""

    url: str = Field(description="SQLAlchemy URL; pass as EnvVar, it may contain a password.")

    @property
    def engine(self) -> Engine:
        return engine_for(self.url)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection inside one transaction: all writes of a step commit together or not at all."""
        with self.engine.begin() as conn:
            yield conn
