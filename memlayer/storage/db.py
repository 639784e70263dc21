"""The one place that owns database access: the pool, the transaction helper, the SQL queries.

Writes run in one explicit transaction (`with pool.connection() as conn, conn.transaction():`), except a
write that is one statement, which is a transaction by itself (a send's store, assistant/conversation.py's
store_transaction). Code that only reads runs its statements in autocommit on the borrowed connection: at
READ COMMITTED, PostgreSQL's default and MemLayer's, each statement takes its own snapshot inside a
transaction too, so BEGIN and COMMIT around reads add two round trips and nothing else (about 11% of a
page's worker CPU, bench/cpu.py).
"""

import atexit
import functools
import logging
import re
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import aiosql
import orjson
import psycopg
from flask import Flask, current_app
from psycopg import errors as pgerrors
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

logger = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
POOL_KEY = "memlayer.pool"


def load_queries(sql_dir: Path = SQL_DIR) -> SimpleNamespace:
    """Load every sql/<resource>.sql file as a namespace of named queries."""
    return SimpleNamespace(
        **{path.stem: aiosql.from_path(path, "psycopg") for path in sorted(sql_dir.glob("*.sql"))}
    )


# Parsed once per process: sql.chats.get_chat(conn, user_id=..., chat_id=...)
sql = load_queries()


class NativeQuery:
    """A query of sql/ in PostgreSQL's own $1..$n placeholders, run by psycopg's RawCursor with named parameters.

    psycopg keeps its parse of a query's %(name)s placeholders only for queries up to 4 kB and parses longer
    ones again on every run: for recall (5.6 kB) that was 15% of a send's instructions (make bench-instructions).
    Here the query is converted once, as psycopg would (each distinct name one $n, %% a literal %).
    """

    PLACEHOLDER = re.compile(r"%\((\w+)\)s")

    def __init__(self, text: str):
        self.names: list[str] = []
        self.sql = self.PLACEHOLDER.sub(self._number, text).replace("%%", "%")

    def _number(self, match: re.Match) -> str:
        if match.group(1) not in self.names:
            self.names.append(match.group(1))
        return f"${self.names.index(match.group(1)) + 1}"

    def fetch_all(self, conn: psycopg.Connection, params: dict, *, prepare: bool | None = None) -> list:
        """Run the query with these named parameters on the caller's connection; all its rows."""
        with psycopg.RawCursor(conn) as cursor:
            return cursor.execute(self.sql, [params[name] for name in self.names], prepare=prepare).fetchall()


@functools.cache
def native(query) -> NativeQuery:
    """The NativeQuery of a loaded query (sql.<file>.<name>), converted at its first use."""
    return NativeQuery(query.sql)


def create_pool(config) -> ConnectionPool:
    """Build a closed pool from the app's settings; the caller decides when to open it."""
    options = (
        f"-c statement_timeout={int(config['STATEMENT_TIMEOUT_MS'])} "
        f"-c lock_timeout={int(config['LOCK_TIMEOUT_MS'])} "
        "-c timezone=UTC"
    )
    return IdleCheckingPool(
        config["DATABASE_URL"],
        min_size=int(config["POOL_MIN_SIZE"]),
        max_size=int(config["POOL_MAX_SIZE"]),
        timeout=float(config["POOL_TIMEOUT"]),
        check=check_if_idle,
        configure=configure_connection,
        kwargs={
            # autocommit=True so conn.transaction() is a real BEGIN/COMMIT, not a savepoint.
            "autocommit": True,
            "row_factory": dict_row,
            "options": options,
            "prepare_threshold": config["PREPARE_THRESHOLD"],
            "application_name": "memlayer",
        },
        reconnect_failed=_log_reconnect_failed,
        name="memlayer",
        open=False,
    )


def configure_connection(conn: psycopg.Connection) -> None:
    """Set up a new pooled connection: JSON values (a send's recent window) are parsed by orjson."""
    set_json_loads(orjson.loads, conn)


# A connection back in the pool for longer than this is probed (one empty query) before it is lent again:
# after a database restart, idle connections are dead. One returned moments ago was just working, and
# probing it too would add a round trip to every checkout under load (measured in the closing note of
# issue 6); if it died since, its request fails with a 503 and the pool replaces it.
CHECK_IDLE_SECONDS = 1.0
_returned_at: "weakref.WeakKeyDictionary[psycopg.Connection, float]" = weakref.WeakKeyDictionary()


class IdleCheckingPool(ConnectionPool):
    """A ConnectionPool that notes when each connection came back, for check_if_idle."""

    def putconn(self, conn: psycopg.Connection) -> None:
        """Note the time, then return the connection as ConnectionPool does."""
        # Not the pool's `reset` callback: with one set, psycopg_pool hands every return to its worker
        # thread, a queue round trip per checkout (measured in the closing note of issue 6).
        _returned_at[conn] = time.monotonic()
        super().putconn(conn)


def check_if_idle(conn: psycopg.Connection) -> None:
    """The pool's checkout check: probe a connection that sat idle (raises when it is broken, so it is replaced)."""
    if time.monotonic() - _returned_at.get(conn, 0.0) > CHECK_IDLE_SECONDS:
        ConnectionPool.check_connection(conn)


def _log_reconnect_failed(pool: ConnectionPool) -> None:
    logger.error("pool %s could not reconnect to the database", pool.name)


def init_app(app: Flask) -> None:
    """Create this process's pool and open it without waiting for the database.

    Under gunicorn the app is built inside each worker (no preload), so this runs after fork.
    """
    pool = create_pool(app.config)
    # wait=False: the service starts even when PostgreSQL is down and connects once it is up.
    pool.open(wait=False)
    app.extensions[POOL_KEY] = pool
    atexit.register(pool.close)


def get_pool(app: Flask | None = None) -> ConnectionPool:
    """The pool of the current (or given) app."""
    return (app or current_app).extensions[POOL_KEY]


def close_pool(app: Flask) -> None:
    """Close the app's pool, returning every connection to the server."""
    get_pool(app).close()


# A transaction that failed with one of these rolled back whole, so running it again from the start is safe:
# serialization failure (40001), deadlock (40P01), lock_timeout (55P03), statement_timeout (57014).
RETRYING_KEY = "memlayer.retrying"
RETRYABLE_ERRORS = (
    pgerrors.SerializationFailure, pgerrors.DeadlockDetected, pgerrors.LockNotAvailable, pgerrors.QueryCanceled,
)


def retrying() -> Retrying:
    """Attempts at one transaction: a retryable failure runs it again after a jittered pause, up to DB_RETRY_ATTEMPTS.

        for attempt in retrying():
            with attempt, get_pool().connection() as conn, conn.transaction():
                ...

    The last failure propagates (the error handler answers 503 with Retry-After).

    One Retrying per app, made at its first use (in a worker, after gevent has patched threading): making one
    per transaction was 12% of a worker's CPU under load, most of it the threading.local it builds. Sharing
    it is safe: a loop's attempt count lives in the loop's own RetryCallState, and tenacity keeps the rest in
    that threading.local, which is per thread, or per greenlet once gevent has patched it.
    """
    extensions = current_app.extensions
    shared = extensions.get(RETRYING_KEY)
    if shared is None:
        shared = extensions[RETRYING_KEY] = Retrying(
            retry=retry_if_exception_type(RETRYABLE_ERRORS),
            stop=stop_after_attempt(int(current_app.config["DB_RETRY_ATTEMPTS"])),
            wait=wait_random_exponential(multiplier=0.05, max=1.0),
            before_sleep=_log_retry,
            reraise=True,
        )
    return shared


def _log_retry(state) -> None:
    error = state.outcome.exception()
    logger.warning("transaction failed with %s (%s), attempt %d; retrying",
                   type(error).__name__, getattr(error, "sqlstate", None), state.attempt_number)


@contextmanager
def transaction(pool: ConnectionPool | None = None) -> Iterator[psycopg.Connection]:
    """Borrow a connection and run one transaction: commit on success, roll back on error.

    For code outside a request (CLI, jobs, tests); the connection always goes back to the pool.
    """
    with (pool or get_pool()).connection() as conn, conn.transaction():
        yield conn
