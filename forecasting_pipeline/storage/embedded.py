"""The embedded PostgreSQL default: a real server in a folder under FP_HOME, via `pgserver`.

Same code path as production (Dagster storage and domain tables on PostgreSQL), with nothing
to install by hand. The server outlives the process that started it, so `demo` and `ui` share
it; `forecasting-pipeline db stop` stops it.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url

_DRIVER = "postgresql+psycopg2"


def with_psycopg2_driver(url: str) -> str:
    """SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3, which we do not install."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername=_DRIVER)
    return parsed.render_as_string(hide_password=False)


def start_embedded_server(data_dir: Path) -> str:
    """Start (or reuse) the server in `data_dir` and return its SQLAlchemy URL."""
    import pgserver  # heavy-ish and only needed when no server is configured

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode=None)
    return with_psycopg2_driver(server.get_uri())


def stop_embedded_server(data_dir: Path) -> bool:
    """Stop the server in `data_dir` if one runs there; return whether one was stopped."""
    if not (data_dir / "postmaster.pid").exists():
        return False
    import pgserver._commands as commands

    pg_ctl = Path(commands.POSTGRES_BIN_PATH) / "pg_ctl"
    owner = data_dir.owner()
    command = [str(pg_ctl), "-D", str(data_dir), "-m", "fast", "-w", "stop"]
    if owner != _current_user():
        # As root, pgserver runs the server as its own system user; stop it as that user.
        command = ["su", owner, "-s", "/bin/sh", "-c", shlex.join(command)]
    subprocess.run(command, check=True, capture_output=True)
    return True


def _current_user() -> str:
    import getpass

    return getpass.getuser()


def embedded_server_running(data_dir: Path) -> bool:
    """Whether a server holds `data_dir` (its postmaster.pid names a live process)."""
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return False
    import psutil

    return psutil.pid_exists(pid)
