"""/metrics: the service's numbers in Prometheus's text format, for operators (MEMLAYER_METRICS_TOKEN)."""

from flask import Blueprint, Response

from memlayer.auth.operators import require_operator
from memlayer.storage.db import get_pool, sql
from memlayer.web.metrics import exposition, gauge_family

bp = Blueprint("metrics", __name__)

JOB_STATES = ("queued", "running", "done", "failed")


@bp.get("/metrics")
def metrics():
    """Every worker's counters and histograms, and the job queue as the database has it now."""
    require_operator()
    with get_pool().connection() as conn:  # reads only: autocommit (storage/db.py)
        counts = {row["state"]: row for row in sql.jobs.queue_counts(conn)}
    jobs = gauge_family("memlayer_jobs", "Background jobs by state",
                        [({"state": state}, counts[state]["jobs"] if state in counts else 0) for state in JOB_STATES])
    oldest = gauge_family("memlayer_jobs_oldest_queued_seconds", "Age of the oldest queued job (0: none queued)",
                          [({}, float(counts["queued"]["oldest_seconds"] or 0) if "queued" in counts else 0.0)])
    text, content_type = exposition([jobs, oldest])
    return Response(text, content_type=content_type)
