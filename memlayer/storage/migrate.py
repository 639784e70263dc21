"""Schema migrations with yoyo: plain SQL files under the top-level migrations/ folder."""

import logging
from contextlib import contextmanager
from pathlib import Path

from yoyo import get_backend, read_migrations

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def yoyo_url(database_url: str) -> str:
    """Rewrite a libpq URL into yoyo's form, which names the psycopg 3 driver."""
    scheme, sep, rest = database_url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ValueError("database URL must start with postgresql://")
    return f"postgresql+psycopg://{rest}"


@contextmanager
def _locked_backend(database_url: str):
    """yoyo's backend and our migrations, under yoyo's lock; the connection is closed after."""
    backend = get_backend(yoyo_url(database_url))
    try:
        with backend.lock():
            yield backend, read_migrations(str(MIGRATIONS_DIR))
    finally:
        backend.connection.close()


def apply_migrations(database_url: str) -> list[str]:
    """Apply pending migrations under yoyo's lock and return the ids applied."""
    with _locked_backend(database_url) as (backend, migrations):
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    applied = [migration.id for migration in pending]
    logger.info("migrations applied: %s", ", ".join(applied) if applied else "none pending")
    return applied


def rollback_migrations(database_url: str) -> list[str]:
    """Roll back every applied migration (used by tests and for tear-down)."""
    with _locked_backend(database_url) as (backend, migrations):
        applied = backend.to_rollback(migrations)
        backend.rollback_migrations(applied)
    return [migration.id for migration in applied]
