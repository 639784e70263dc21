"""/health: liveness with database reachability, and (for operators) the pool's own statistics."""

import logging

import psycopg
from flask import Blueprint, current_app

from memlayer.auth.operators import require_operator
from memlayer.storage.db import get_pool, sql
from memlayer.version import __version__
from memlayer.web.errors import RETRY_AFTER_SECONDS
from memlayer.web.schemas import HealthSchema

logger = logging.getLogger(__name__)

bp = Blueprint("health", __name__, url_prefix="/health")

_health = HealthSchema()
HEALTH_CHECK_TIMEOUT = 2.0


@bp.get("")
def health():
    """200 when the database answers, 503 (still JSON) when it does not."""
    timeout = min(HEALTH_CHECK_TIMEOUT, float(current_app.config["POOL_TIMEOUT"]))
    try:
        with get_pool().connection(timeout=timeout) as conn:  # reads only: autocommit (storage/db.py)
            sql.health.ping(conn)
    except psycopg.OperationalError as error:  # PoolTimeout is one too
        logger.warning("health check: database unreachable (%s)", type(error).__name__)
        body = _health.dump({"status": "unavailable", "version": __version__, "database": "unreachable"})
        body["detail"] = "Database unreachable"
        return body, 503, {"Retry-After": RETRY_AFTER_SECONDS}
    return _health.dump({"status": "ok", "version": __version__, "database": "ok"})


@bp.get("/db-pool")
def db_pool():
    """psycopg_pool's statistics for this worker's pool (pool_size, pool_available, ...), for operators only."""
    require_operator()
    return get_pool().get_stats()

