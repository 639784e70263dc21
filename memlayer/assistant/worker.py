"""`memlayer worker`: threads that claim queued jobs from PostgreSQL (memory_jobs) and run them.

A claim is a short transaction (FOR UPDATE SKIP LOCKED) that marks the job running under a lease and counts
an attempt. A failed attempt is queued again with exponential backoff, up to MEMLAYER_JOB_MAX_ATTEMPTS; a
worker that dies leaves its lease to lapse, and the job is claimed again. Applying a result checks that the
claim still holds, so a job finishes once.
"""

import logging
import random
import threading

from flask import Flask

from memlayer import config as settings
from memlayer.assistant.extraction import ClaimedJob, run_extraction
from memlayer.storage.db import get_pool, sql
from memlayer.web.metrics import JOBS_RUN

logger = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 5.0
BACKOFF_CAP_SECONDS = 600.0


def backoff_seconds(attempts: int) -> float:
    """How long a job waits after its `attempts`-th failed attempt: doubling from 5 s, capped at 10 min, jittered."""
    return min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempts - 1)) * random.uniform(0.75, 1.25)


def claim_job(app: Flask) -> ClaimedJob | None:
    """Claim the next due job, if there is one (a transaction of its own)."""
    with app.app_context(), get_pool().connection() as conn, conn.transaction():
        max_attempts = int(app.config["JOB_MAX_ATTEMPTS"])
        sql.jobs.give_up_abandoned(conn, max_attempts=max_attempts)
        rows = list(sql.jobs.claim_jobs(conn, limit=1, lease_seconds=settings.job_lease_seconds(app.config),
                                        max_attempts=max_attempts))
    return ClaimedJob(**rows[0]) if rows else None


def run_job(app: Flask, job: ClaimedJob) -> str:
    """Run one claimed job; a failure queues it again with backoff (or gives it up). Returns its outcome."""
    with app.app_context():
        try:
            outcome = run_extraction(job)
        except Exception as error:  # any failure of one job must not stop the worker
            outcome = type(error).__name__
            delay = backoff_seconds(job.attempts)
            logger.warning("job %s failed on attempt %d (%s); retrying in %.0f s unless that was the last",
                           job.id, job.attempts, outcome, delay)
            with get_pool().connection() as conn, conn.transaction():
                sql.jobs.retry_job(conn, job_id=job.id, attempt=job.attempts, delay_seconds=delay,
                                   max_attempts=int(app.config["JOB_MAX_ATTEMPTS"]), outcome=outcome)
            JOBS_RUN.labels("failed").inc()
            return outcome
    logger.info("job %s: %s", job.id, outcome)
    JOBS_RUN.labels("applied" if outcome.startswith("applied") else "skipped").inc()
    return outcome


def run_due_jobs(app: Flask, limit: int = 1000) -> list[str]:
    """Run due jobs one after another until none is left (at most `limit`); their outcomes. For tests and benches."""
    outcomes = []
    while len(outcomes) < limit and (job := claim_job(app)) is not None:
        outcomes.append(run_job(app, job))
    return outcomes


class Worker:
    """`threads` threads claiming and running jobs until stop() is called; each finishes its job first."""

    def __init__(self, app: Flask, threads: int):
        self.app = app
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._loop, name=f"memlayer-jobs-{n}") for n in range(threads)]

    def start(self) -> None:
        """Start the threads."""
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        """Ask every thread to stop after its current job."""
        self.stopping.set()

    def join(self) -> None:
        """Wait until every thread has stopped."""
        for thread in self.threads:
            thread.join()

    def _loop(self) -> None:
        # Idle threads look for work every poll interval x threads, so the worker as a whole polls about
        # every poll interval; a thread that found a job looks again at once.
        idle_wait = float(self.app.config["JOB_POLL_SECONDS"]) * len(self.threads)
        while not self.stopping.is_set():
            try:
                job = claim_job(self.app)
            except Exception as error:  # the database is down: wait and try again, as requests do
                logger.warning("could not claim a job (%s)", type(error).__name__)
                self.stopping.wait(idle_wait)
                continue
            if job is None:
                self.stopping.wait(idle_wait)
                continue
            try:
                run_job(self.app, job)
            except Exception as error:  # not even the retry could be recorded: the lease brings the job back
                logger.warning("job %s could not be settled (%s)", job.id, type(error).__name__)
