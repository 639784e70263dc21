"""The `memlayer` command: serve, migrate, db-url."""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import psycopg

from memlayer import config
from memlayer.embedded import resolve_database_url, stop_embedded
from memlayer.logs import configure_logging
from memlayer.migrate import apply_migrations

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = PROJECT_ROOT / "gunicorn.conf.py"


@click.group()
def main() -> None:
    """MemLayer: a chat-and-memory backend for LLM assistants."""
    settings = config.load()
    configure_logging(settings["LOG_LEVEL"], settings["LOG_FORMAT"])


@main.command()
@click.option("--bind", envvar="MEMLAYER_BIND", default="127.0.0.1:8000", show_default=True,
              help="Address to listen on, in gunicorn's bind syntax (env MEMLAYER_BIND).")
@click.option("--workers", envvar="MEMLAYER_WORKERS", type=click.IntRange(min=1), default=2, show_default=True,
              help="gunicorn worker processes (env MEMLAYER_WORKERS).")
def serve(bind: str, workers: int) -> None:
    """Migrate the database, then serve the API with gunicorn until Ctrl-C."""
    settings = config.load()
    try:
        config.check(settings)
        database_url = resolve_database_url(settings)
        apply_migrations(database_url)
    except (config.ConfigError, psycopg.OperationalError) as error:
        # The message names the host and the problem, never a password.
        raise click.ClickException(f"cannot start: {error}") from None
    env = {**os.environ, "MEMLAYER_DATABASE_URL": database_url, "MEMLAYER_BIND": bind, "MEMLAYER_WORKERS": str(workers)}
    command = [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONF), "--chdir", str(PROJECT_ROOT), "wsgi:app"]
    server = subprocess.Popen(command, env=env)
    code = _run_until_stopped(server)
    logger.info("server stopped")
    # Leaving this process stops the embedded PostgreSQL it started (if any).
    sys.exit(0 if code in (0, -signal.SIGINT, -signal.SIGTERM) else code)


RESEND_STOP_SECONDS = 2.0
STOP_DEADLINE_SECONDS = 45.0  # longer than gunicorn's graceful_timeout (30 s)


def _run_until_stopped(server: subprocess.Popen) -> int:
    """Wait for gunicorn; on SIGINT/SIGTERM pass the signal on until it exits, then return its exit code.

    The signal is repeated every couple of seconds: a master that misses one (seen once with
    gunicorn 27 on a loaded machine) would otherwise keep serving and leave Ctrl-C hanging.
    After the deadline gunicorn is killed, so `serve` always ends.
    """
    stop: dict = {}

    def request_stop(signum, frame):
        stop.setdefault("signal", signum)
        stop.setdefault("deadline", time.monotonic() + STOP_DEADLINE_SECONDS)
        stop["resend_at"] = 0.0

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    while True:
        if stop and time.monotonic() >= stop["resend_at"] and server.poll() is None:
            if time.monotonic() >= stop["deadline"]:
                logger.error("gunicorn did not stop within %.0f s; killing it", STOP_DEADLINE_SECONDS)
                server.kill()
            else:
                server.send_signal(stop["signal"])
                stop["resend_at"] = time.monotonic() + RESEND_STOP_SECONDS
        try:
            return server.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue


@main.command()
def migrate() -> None:
    """Apply pending schema migrations."""
    applied = apply_migrations(resolve_database_url(config.load()))
    click.echo(f"applied: {', '.join(applied)}" if applied else "nothing to apply")


@main.command("db-url")
def db_url() -> None:
    """Print the URL of the database in use (starting the embedded one, left running)."""
    click.echo(resolve_database_url(config.load(), keep_running=True))


@main.command("db-stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL that `db-url` left running."""
    stopped = stop_embedded(config.load()["DATA_DIR"])
    click.echo("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")
