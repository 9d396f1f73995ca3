"""Which failures are worth retrying: a dropped connection, a deadlock, a busy file system.

A step that fails on one of these is retried with exponential backoff (RetryRequested); any
other error fails the step at once, since running the same code on the same data again would
fail the same way.
"""

from __future__ import annotations

import errno
import random

# psycopg2 SQLSTATE codes a second attempt can get past.
_TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "57P01",  # admin_shutdown (server restarting)
        "57P03",  # cannot_connect_now
        "53300",  # too_many_connections
        "08000",  # connection_exception
        "08003",  # connection_does_not_exist
        "08006",  # connection_failure
        "08001",  # unable to establish a connection
    }
)
_TRANSIENT_ERRNOS = frozenset(
    {errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.EBUSY, errno.ESTALE}
)
MAX_RETRIES = 3


def is_transient(error: BaseException) -> bool:
    """Whether `error`, or anything in its cause chain, is a transient database or I/O failure."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, OperationalError | InterfaceError):
            return True
        if getattr(current, "pgcode", None) in _TRANSIENT_SQLSTATES:
            return True
        if isinstance(current, ConnectionError | TimeoutError):
            return True
        if isinstance(current, OSError) and current.errno in _TRANSIENT_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff from FP_RETRY_BASE_SECONDS with ±25 % jitter, so retried steps do
    not return in lockstep."""
    from forecasting_pipeline.settings import load_settings

    base = load_settings().retry_base_seconds
    return base * (2**attempt) * random.uniform(0.75, 1.25)  # noqa: S311 - jitter, not secrecy
