"""Schema migrations with yoyo: plain SQL files under the top-level migrations/ folder."""

import logging
from pathlib import Path

from yoyo import get_backend, read_migrations

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def yoyo_url(database_url: str) -> str:
    """Rewrite a libpq URL into yoyo's form, which names the psycopg 3 driver."""
    scheme, sep, rest = database_url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ValueError("database URL must start with postgresql://")
    return f"postgresql+psycopg://{rest}"


def _backend_and_migrations(database_url: str):
    return get_backend(yoyo_url(database_url)), read_migrations(str(MIGRATIONS_DIR))


def apply_migrations(database_url: str) -> list[str]:
    """Apply pending migrations under yoyo's lock and return the ids applied."""
    backend, migrations = _backend_and_migrations(database_url)
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    applied = [migration.id for migration in pending]
    logger.info("migrations applied: %s", ", ".join(applied) if applied else "none pending")
    return applied


def rollback_migrations(database_url: str) -> list[str]:
    """Roll back every applied migration (used by tests and for tear-down)."""
    backend, migrations = _backend_and_migrations(database_url)
    with backend.lock():
        applied = backend.to_rollback(migrations)
        backend.rollback_migrations(applied)
    return [migration.id for migration in applied]
