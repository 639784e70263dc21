"""/usage: a user's tokens and cost per model, what memory extraction spent, and the monthly quota."""

from flask import Blueprint, current_app
from flask_jwt_extended import jwt_required
from marshmallow import ValidationError

from memlayer.assistant import quota
from memlayer.auth.tokens import current_user_id
from memlayer.storage.db import get_pool, retrying, sql
from memlayer.web.schemas import UsageQuerySchema, UsageSchema, load_query

bp = Blueprint("usage", __name__, url_prefix="/usage")

_query = UsageQuerySchema()
_usage = UsageSchema()


@bp.get("")
@jwt_required()
def usage():
    """Tokens and cost per model in [from, to) (default: this calendar month, UTC, so far)."""
    query, now = load_query(_query), quota.utc_now()
    start = query["start"] or quota.period_start(now)
    end = query["end"] or now
    if start >= end:
        raise ValidationError({"from": ["Must be before 'to'."]})
    monthly_quota, user_id = current_app.config["MONTHLY_TOKEN_QUOTA"], current_user_id()
    for attempt in retrying():
        with attempt, get_pool().connection() as conn:  # reads only: autocommit (storage/db.py)
            *models, total = sql.usage.usage_by_model(conn, user_id=user_id, start=start, end=end)
            memory = sql.usage.memory_usage_totals(conn, user_id=user_id, start=start, end=end)
            used = sql.usage.tokens_used(conn, user_id=user_id, period=quota.period_of(now)) if monthly_quota else None
    return _usage.dump({
        "start": start, "end": end, "models": models, "total": total, "memory": memory,
        "quota": None if used is None else
        {"monthly_tokens": monthly_quota, "used": used, "renews_at": quota.next_period(now)},
    })
