"""The `memlayer` command's migrate, db-url and db-stop, and how serve stops gunicorn."""

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
from click.testing import CliRunner

from memlayer import cli
from memlayer.cli import main


def test_migrate_reports_nothing_pending(database_url, monkeypatch):
    monkeypatch.setenv("MEMLAYER_DATABASE_URL", database_url)
    result = CliRunner().invoke(main, ["migrate"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "nothing to apply"


def test_db_url_prints_the_configured_database(database_url, monkeypatch):
    monkeypatch.setenv("MEMLAYER_DATABASE_URL", database_url)
    result = CliRunner().invoke(main, ["db-url"])
    assert result.exit_code == 0
    assert result.stdout.strip() == database_url


def memlayer(*args, data_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMLAYER_")}
    env["MEMLAYER_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "memlayer", *args], env=env, capture_output=True, text=True, timeout=60)


def test_db_url_starts_the_embedded_database_and_db_stop_stops_it(tmp_path):
    started = memlayer("db-url", data_dir=tmp_path)
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    try:
        # The server outlives the command, so `psql "$(memlayer db-url)"` works.
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "memlayer"
    finally:
        stopped = memlayer("db-stop", data_dir=tmp_path)
    assert stopped.stdout.strip() == "embedded PostgreSQL stopped", stopped.stderr
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()
    assert memlayer("db-stop", data_dir=tmp_path).stdout.strip() == "embedded PostgreSQL was not running"


def test_serve_refuses_an_unsafe_production_config(monkeypatch):
    monkeypatch.setenv("MEMLAYER_ENV", "production")
    monkeypatch.delenv("MEMLAYER_JWT_SECRET_KEY", raising=False)
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 1 and "MEMLAYER_JWT_SECRET_KEY" in result.output


def test_serve_repeats_a_lost_stop_signal_until_gunicorn_exits():
    """A child that misses the first SIGTERM (as a busy gunicorn master once did) still gets stopped."""
    child = subprocess.Popen([sys.executable, "-c", (
        "import signal, sys, time\n"
        "seen = []\n"
        "def handle(signum, frame):\n"
        "    seen.append(signum)\n"
        "    if len(seen) == 2: sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, handle)\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(0.05)\n"
    )], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    jobs = SleepingJobWorker({})
    threading.Timer(0.3, os.kill, [os.getpid(), signal.SIGTERM]).start()
    try:
        started = time.monotonic()
        code = cli._run_until_stopped(child, jobs, deadline=45)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert code == 0
    assert time.monotonic() - started < cli.RESEND_STOP_SECONDS + 3
    assert jobs.process.poll() is not None  # the job worker stopped with the server


class SleepingJobWorker(cli.JobWorkerProcess):
    """A stand-in for `memlayer worker` that only waits to be stopped."""

    def _start(self):
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_serve_starts_its_job_worker_again_when_it_dies():
    jobs = SleepingJobWorker({})
    first = jobs.process
    first.kill()
    first.wait()
    jobs.keep_alive()
    assert jobs.process is not first and jobs.process.poll() is None
    jobs.stop(deadline=5)
    assert jobs.process.poll() is not None


def test_a_database_found_unfit_after_start_stops_the_server(monkeypatch, caplog):
    def unfit(settings):
        raise cli.config.ConfigError("MEMLAYER_EMBEDDING_MODEL is set, but this PostgreSQL has no pgvector")

    signals = []
    monkeypatch.setattr(cli, "prepare_database", unfit)
    monkeypatch.setattr(cli, "MIGRATE_RETRY_SECONDS", 0)
    monkeypatch.setattr(cli.os, "kill", lambda pid, signum: signals.append((pid, signum)))

    cli._prepare_when_reachable({})

    assert signals == [(os.getpid(), signal.SIGTERM)]
    assert "cannot serve: MEMLAYER_EMBEDDING_MODEL is set" in caplog.text
