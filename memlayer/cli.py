"""The `memlayer` command: serve, worker, migrate, embed, export, import, models, db-url, db-stop."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import click
import psycopg
from marshmallow import ValidationError
from psycopg.rows import dict_row

from memlayer import config
from memlayer.app import create_app
from memlayer.assistant import catalog
from memlayer.assistant.archive import (
    EXPORT_FORMAT,
    export_document,
    import_conversation,
    import_memory,
    queue_extraction,
)
from memlayer.assistant.chatgpt import convert, is_chatgpt_export
from memlayer.assistant.worker import Worker
from memlayer.memory.embeddings import backfill
from memlayer.providers.embeddings import EmbeddingsClient
from memlayer.storage.db import create_pool, get_pool, retrying, sql, transaction
from memlayer.storage.embedded import resolve_database_url, stop_embedded
from memlayer.storage.migrate import apply_migrations
from memlayer.web.logs import configure_logging
from memlayer.web.schemas import ChatImportSchema, ImportMemorySchema

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
        database_url, _ = prepare_database(settings)
    except psycopg.OperationalError as error:
        if not settings.get("DATABASE_URL"):  # the embedded server did not start: nothing to wait for
            raise click.ClickException(f"cannot start: {error}") from None
        # A database that is down must not keep the API down once it returns: serve (503s meanwhile) and
        # migrate as soon as it answers. The message names the host and the problem, never a password.
        logger.warning("database unreachable at start (%s); serving anyway, migrating once it answers",
                       str(error).strip().splitlines()[0])
        database_url = settings["DATABASE_URL"]
        threading.Thread(target=_prepare_when_reachable, args=(settings,), daemon=True).start()
    except config.ConfigError as error:
        raise click.ClickException(f"cannot start: {error}") from None
    env = {**os.environ, "MEMLAYER_DATABASE_URL": database_url, "MEMLAYER_BIND": bind, "MEMLAYER_WORKERS": str(workers)}
    # glibc raises its mmap threshold after the first large block is freed, so Argon2's 19 MiB per hash would
    # then come from the heap and stay resident: 2 workers grew from 58 to 98-117 MB after 160 logins. A fixed
    # threshold gives such blocks back to the system when freed (60 MB after the same logins).
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(1024 * 1024))
    metrics_dir, made_metrics_dir = metrics_directory()
    env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # every process writes its metrics there; /metrics sums them
    command = [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONF), "--chdir", str(PROJECT_ROOT), "wsgi:app"]
    try:
        server = subprocess.Popen(command, env=env)
        # One job worker beside gunicorn, so that one command runs everything (more go anywhere: `memlayer worker`).
        jobs = JobWorkerProcess(env)
        code = _run_until_stopped(server, jobs, deadline=config.graceful_timeout(settings) + 15)
    finally:
        if made_metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    logger.info("server stopped")
    # Leaving this process stops the embedded PostgreSQL it started (if any).
    sys.exit(0 if code in (0, -signal.SIGINT, -signal.SIGTERM) else code)


RESEND_STOP_SECONDS = 2.0


def metrics_directory() -> tuple[str, bool]:
    """The multiprocess metrics folder: PROMETHEUS_MULTIPROC_DIR emptied when given, else a new one (made=True).

    Values left by an earlier run would be summed into this one's, hence emptied.
    """
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
        for leftover in Path(given).glob("*.db"):
            leftover.unlink()
        return given, False
    return tempfile.mkdtemp(prefix="memlayer-metrics-"), True


def prepare_database(settings) -> tuple[str, list[str]]:
    """Migrate the database (starting the embedded one if no URL is set) and add the configured models.

    Returns the database URL and the migrations applied.
    """
    database_url = resolve_database_url(settings)
    applied = apply_migrations(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        catalog.seed_models(conn, settings)
        if settings.get("EMBEDDING_MODEL") and not sql.embeddings.vectors_available(conn):
            raise config.ConfigError(
                "MEMLAYER_EMBEDDING_MODEL is set, but this PostgreSQL has no pgvector (the vector extension): "
                "install pgvector there, or unset MEMLAYER_EMBEDDING_MODEL to run with lexical recall only")
    return database_url, applied


def prepared_database(settings) -> str:
    """prepare_database for the commands other than serve: a configuration problem is a one-line error."""
    try:
        return prepare_database(settings)[0]
    except config.ConfigError as error:
        raise click.ClickException(f"cannot start: {error}") from None


MIGRATE_RETRY_SECONDS = 1.0


def _prepare_when_reachable(settings) -> None:
    """Retry prepare_database until the database answers (serve's workers answer 503 until then).

    A database that turns out unfit for the configuration (an embedding model, no pgvector) stops the
    server, as it would have at start.
    """
    while True:
        time.sleep(MIGRATE_RETRY_SECONDS)
        try:
            _, applied = prepare_database(settings)
        except psycopg.OperationalError:
            continue
        except config.ConfigError as error:
            logger.error("cannot serve: %s", error)
            os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler stops gunicorn
            return
        logger.info("database reachable; migrations applied: %s", ", ".join(applied) or "none needed")
        return


class JobWorkerProcess:
    """`memlayer worker` as a child of serve: restarted if it dies, stopped with the server."""

    RESTART_SECONDS = 1.0

    def __init__(self, env: dict):
        self.env = env
        self.process = self._start()

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "memlayer", "worker"], env=self.env)

    def keep_alive(self) -> None:
        """Start it again if it exited (a crash, or a kill): queued jobs wait for it, none is lost."""
        if self.process.poll() is not None:
            logger.warning("job worker exited with %s; starting another", self.process.returncode)
            forget_process_metrics(self.process.pid, self.env.get("PROMETHEUS_MULTIPROC_DIR"))
            time.sleep(self.RESTART_SECONDS)
            self.process = self._start()

    def stop(self, deadline: float) -> None:
        """SIGTERM (it finishes its jobs first), and SIGKILL after `deadline` seconds."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            logger.error("job worker did not stop within %.0f s; killing it", deadline)
            self.process.kill()
            self.process.wait()


def forget_process_metrics(pid: int, directory: str | None) -> None:
    """Drop a dead process's live gauges from the multiprocess metrics in `directory` (its counters still count)."""
    if directory:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)


def _run_until_stopped(server: subprocess.Popen, jobs: JobWorkerProcess, *, deadline: float) -> int:
    """Wait for gunicorn; on SIGINT/SIGTERM pass the signal on until it exits, then return its exit code.

    The signal is repeated every couple of seconds: a master that misses one (seen once with
    gunicorn 27 on a loaded machine) would otherwise keep serving and leave Ctrl-C hanging.
    After `deadline` seconds (longer than gunicorn's graceful timeout) it is killed, so `serve` always ends.
    The job worker is kept running meanwhile, and stopped once gunicorn has.
    """
    stop: dict = {}

    def request_stop(signum, frame):
        stop.setdefault("signal", signum)
        stop.setdefault("deadline", time.monotonic() + deadline)
        stop["resend_at"] = 0.0

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    while True:
        if stop and time.monotonic() >= stop["resend_at"] and server.poll() is None:
            if time.monotonic() >= stop["deadline"]:
                logger.error("gunicorn did not stop within %.0f s; killing it", deadline)
                server.kill()
            else:
                server.send_signal(stop["signal"])
                jobs.process.terminate()  # stops alongside: its jobs finish while gunicorn drains
                stop["resend_at"] = time.monotonic() + RESEND_STOP_SECONDS
        elif not stop:
            jobs.keep_alive()
        try:
            code = server.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue
        jobs.stop(max(1.0, stop.get("deadline", time.monotonic() + deadline) - time.monotonic()))
        return code


@main.command()
@click.option("--threads", envvar="MEMLAYER_WORKER_THREADS", type=click.IntRange(min=1, max=256), default=None,
              help="Jobs run at once (env MEMLAYER_WORKER_THREADS, default 4).")
def worker(threads: int | None) -> None:
    """Run queued background jobs (memory extraction) until SIGTERM or Ctrl-C; each running job finishes first."""
    try:
        app = create_app({"WORKER_THREADS": threads} if threads else None)
    except config.ConfigError as error:
        raise click.ClickException(f"cannot start: {error}") from None
    # Background work yields the CPU to requests: a burst of sends delays extraction, not the sends.
    os.nice(int(app.config["WORKER_NICE"]))
    jobs = Worker(app, int(app.config["WORKER_THREADS"]))
    signal.signal(signal.SIGTERM, lambda signum, frame: jobs.stop())
    signal.signal(signal.SIGINT, lambda signum, frame: jobs.stop())
    jobs.start()
    logger.info("job worker started (%d threads)", len(jobs.threads))
    while any(thread.is_alive() for thread in jobs.threads):
        for thread in jobs.threads:
            thread.join(timeout=0.5)  # short waits, so the signal handlers run
    app.extensions["memlayer.pool"].close()
    logger.info("job worker stopped")


@main.command()
def migrate() -> None:
    """Apply pending schema migrations and add the configured models."""
    try:
        _, applied = prepare_database(config.load())
    except config.ConfigError as error:
        raise click.ClickException(f"cannot start: {error}") from None
    click.echo(f"applied: {', '.join(applied)}" if applied else "nothing to apply")


@main.group()
def models() -> None:
    """Manage the language models chats can use."""


MODEL_COLUMNS = ("name", "provider", "context_window", "input_price_per_million", "output_price_per_million", "is_enabled")


def _print_models(rows: list[dict]) -> None:
    table = [MODEL_COLUMNS] + [tuple(str(row[column]) for column in MODEL_COLUMNS) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(MODEL_COLUMNS))]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


@models.command("add")
@click.argument("name")
@click.option("--provider", type=click.Choice(["openai", "offline"]),
              help="openai (default for a new model): the OpenAI-compatible API at MEMLAYER_LLM_BASE_URL; "
                   "offline: the built-in responder.")
@click.option("--context-window", type=click.IntRange(min=512), help="Tokens the model accepts (default 8192).")
@click.option("--input-price", type=click.FloatRange(min=0), help="Price per million prompt tokens (default 0).")
@click.option("--output-price", type=click.FloatRange(min=0), help="Price per million completion tokens (default 0).")
def models_add(name: str, provider: str | None, context_window: int | None, input_price: float | None,
               output_price: float | None) -> None:
    """Add a model, or enable and update the one with this NAME (unset options keep their value)."""
    if not name.strip() or len(name) > 200:
        raise click.BadParameter("must be 1 to 200 characters", param_hint="NAME")
    with _models_connection() as conn:
        row = sql.models.add_model(conn, name=name, provider=provider, context_window=context_window,
                                   input_price_per_million=input_price, output_price_per_million=output_price)
    _print_models([row])


@models.command("list")
def models_list() -> None:
    """Every model, enabled or not."""
    with _models_connection() as conn:
        _print_models(list(sql.models.list_models(conn)))


@models.command("disable")
@click.argument("name")
def models_disable(name: str) -> None:
    """Hide a model from GET /models; chats using it must choose another before their next send."""
    _set_enabled(name, False)


@models.command("enable")
@click.argument("name")
def models_enable(name: str) -> None:
    """Make a disabled model available again."""
    _set_enabled(name, True)


def _set_enabled(name: str, enabled: bool) -> None:
    with _models_connection() as conn:
        row = sql.models.set_model_enabled(conn, name=name, is_enabled=enabled)
    if row is None:
        raise click.ClickException(f"no model named {name!r} (see `memlayer models list`)")
    _print_models([row])


def _models_connection() -> psycopg.Connection:
    """A connection to the migrated database for one models command."""
    return psycopg.connect(prepared_database(config.load()), autocommit=True, row_factory=dict_row)


BACKFILL_TIMEOUT_SECONDS = 60.0  # a batch, not a send: the provider may take its time
BACKFILL_RETRIES = 3


@main.command()
@click.option("--batch", type=click.IntRange(1, 2048), default=64, show_default=True,
              help="Texts per request to the embeddings server.")
def embed(batch: int) -> None:
    """Give every user message and memory without one a vector of MEMLAYER_EMBEDDING_MODEL.

    Resumable and idempotent (what has a vector of the model is skipped), safe while the service runs.
    After a model change it re-embeds everything; until then old vectors are not used.
    """
    settings = config.load()
    try:
        config.check(settings)
    except config.ConfigError as error:
        raise click.ClickException(f"cannot start: {error}") from None
    if not settings.get("EMBEDDING_MODEL"):
        raise click.ClickException("set MEMLAYER_EMBEDDING_MODEL (and its server) first; see the README")
    pool = create_pool({**settings, "DATABASE_URL": prepared_database(settings), "POOL_MIN_SIZE": 1,
                        "POOL_MAX_SIZE": 2})
    pool.open(wait=True)
    client = EmbeddingsClient(config.embedding_base_url(settings), model=str(settings["EMBEDDING_MODEL"]),
                              api_key=config.embedding_api_key(settings), timeout=BACKFILL_TIMEOUT_SECONDS,
                              retries=BACKFILL_RETRIES)
    try:
        with transaction(pool) as conn:
            missing = sql.embeddings.count_missing_embeddings(conn, model=client.model)
        with click.progressbar(length=missing, label=f"embedding with {client.model}") as bar:
            counts = backfill(pool, client, batch=batch, on_progress=bar.update)
    finally:
        client.close()
        pool.close()
    click.echo(f"embedded {counts['embedded']}, failed {counts['failed']}"
               + (" (run `memlayer embed` again to retry them)" if counts["failed"] else ""))
    if counts["failed"]:
        sys.exit(1)


@main.command("db-url")
def db_url() -> None:
    """Print the URL of the database in use (starting the embedded one, left running)."""
    click.echo(resolve_database_url(config.load(), keep_running=True))


@main.command("db-stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL that `db-url` left running."""
    stopped = stop_embedded(config.load()["DATA_DIR"])
    click.echo("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")


def _user_id_of(email: str):
    """The id of the account with this email (the caller holds an app context); a one-line error if none."""
    with get_pool().connection() as conn:  # reads only: autocommit (storage/db.py)
        user = sql.users.get_user_by_email(conn, email=email)
    if user is None:
        raise click.ClickException(f"no account with the email {email}")
    return user["id"]


@main.command("export")
@click.option("--user", "email", required=True, help="The account's email.")
@click.option("-o", "--output", type=click.File("w", encoding="utf-8"), default="-", show_default=True,
              help="Where to write the JSON document.")
def export_command(email: str, output) -> None:
    """Write everything of one account as the JSON document GET /auth/me/export serves."""
    app = _command_app()
    with app.app_context():
        user_id = _user_id_of(email)
        for piece in export_document(user_id, datetime.now(timezone.utc)):
            output.write(piece)
    get_pool(app).close()


@main.command("import")
@click.option("--user", "email", required=True, help="The account to import into.")
@click.option("--extract", is_flag=True, help="Queue memory extraction for the imported messages too.")
@click.argument("file", type=click.File("rb"))
def import_command(email: str, extract: bool, file) -> None:
    """Import a MemLayer export or ChatGPT's conversations.json; each conversation once, however often run."""
    try:
        document = json.load(file)
    except (ValueError, UnicodeDecodeError):
        raise click.ClickException(f"{file.name} is not a JSON file") from None
    if isinstance(document, dict) and document.get("format") == EXPORT_FORMAT:
        source = "memlayer"
        conversations = [(str(chat.get("id", n)), chat, Counter()) for n, chat in enumerate(document.get("chats", []))]
        memories = document.get("memories", [])
    elif is_chatgpt_export(document):
        source = "chatgpt"
        conversations = [(c.source_id, c.body, c.skipped) for c in map(convert, document)]
        memories = []
    else:
        raise click.ClickException("not a MemLayer export nor a ChatGPT conversations.json")
    app = _command_app()
    tally, skipped, problems = Counter(), Counter(), []
    with app.app_context():
        user_id = _user_id_of(email)
        with click.progressbar(conversations, label="importing", show_pos=True, file=sys.stderr) as bar:
            for source_id, body, left_out in bar:
                outcome = _import_one(user_id, source, source_id, body, extract)
                tally[outcome] += 1
                if outcome == "invalid":
                    problems.append(source_id)
                else:
                    skipped.update(left_out)
                    tally["messages"] += len(body.get("messages", [])) if outcome == "imported" else 0
        if memories:
            tally.update(_import_memories(user_id, memories))
    get_pool(app).close()
    click.echo(f"imported {tally['imported']} conversations ({tally['messages']} messages), "
               f"{tally['already']} already imported before, {tally['invalid']} refused; "
               f"memories: {tally['memories imported']} imported, {tally['memories kept']} already there"
               + (f", {tally['memories refused']} refused (invalid)" if tally["memories refused"] else ""))
    if skipped:
        click.echo("left out: " + ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items())))
    for source_id in problems[:20]:
        click.echo(f"refused (invalid): conversation {source_id}", err=True)


def _import_one(user_id, source: str, source_id: str, body: dict, extract: bool) -> str:
    """Import one conversation in its own transaction unless it was before: imported, already or invalid."""
    try:
        conversation = ChatImportSchema().load(body)
    except ValidationError:
        return "invalid"
    for attempt in retrying():
        with attempt, get_pool().connection() as conn, conn.transaction():
            if sql.archive.find_import(conn, user_id=user_id, source=source, source_id=source_id) is not None:
                return "already"
            chat = import_conversation(conn, user_id, conversation)
            sql.archive.record_import(conn, user_id=user_id, source=source, source_id=source_id, chat_id=chat["id"])
            if extract:
                queue_extraction(conn, chat["id"])
    return "imported"


def _import_memories(user_id, memories: list) -> Counter:
    """Import an export's memories in one transaction; counted as imported, kept (already there) or refused."""
    counts: Counter = Counter()
    schema = ImportMemorySchema()
    now = datetime.now(timezone.utc)
    for attempt in retrying():
        with attempt, get_pool().connection() as conn, conn.transaction():
            counts.clear()
            for memory in memories:
                try:
                    valid = schema.load(memory)
                except ValidationError:
                    counts["memories refused"] += 1
                    continue
                saved = import_memory(conn, user_id, valid, default_time=now)
                counts["memories imported" if saved else "memories kept"] += 1
    return counts


def _command_app():
    """The app for a one-off command, on the configured (or embedded) database, migrated."""
    settings = config.load()
    database_url = prepared_database(settings)
    try:
        return create_app({"DATABASE_URL": database_url, "POOL_MIN_SIZE": 1, "POOL_MAX_SIZE": 2})
    except config.ConfigError as error:
        raise click.ClickException(f"cannot start: {error}") from None
