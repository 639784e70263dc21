"""Idempotency-Key for the POSTs that create things: a retry replays the first response instead of writing again.

A request with a key first claims it (its own short transaction). Its response is recorded in the same
transaction as its writes, and replayed byte for byte to a retry with the same key and body. A failed
request gives its claim back, so a retry runs afresh; a request that died (a killed worker) holds the key
until its lease runs out, and the claim token makes sure only one request ever records a response.
"""

import hashlib
import json
import logging
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import psycopg
from flask import Response, current_app, request
from psycopg_pool import PoolTimeout

from memlayer.config import graceful_timeout
from memlayer.storage.db import get_pool, retrying, sql
from memlayer.web.errors import ApiError, Conflict
from memlayer.web.metrics import IDEMPOTENT_REPLAYS

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
TTL_SECONDS = 24 * 60 * 60
CONNECT_TIMEOUT_SECONDS = 5
REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass(frozen=True)
class Claim:
    """This request's hold on an idempotency key."""

    user_id: uuid.UUID
    key: str
    token: uuid.UUID


def request_key() -> str | None:
    """The request's Idempotency-Key, or None; 400 when it is empty, too long or not printable ASCII."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= char <= "~" for char in key):
        raise ApiError(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    return key


def fingerprint() -> str:
    """What makes two requests "the same": the path and the JSON body, whitespace and key order aside."""
    body = request.get_json(silent=True) if request.get_data(cache=True) else None
    canonical = json.dumps({"path": request.path, "body": body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def claim_request(user_id: uuid.UUID) -> tuple[Claim | None, Response | None]:
    """Claim the request's key: (claim, None) to go on, (None, replay) when it already ran, (None, None) without a key.

    Raises 422 when the key was used for another request, and 409 while the first request still runs.
    """
    key = request_key()
    if key is None:
        return None, None
    claim, this_request = Claim(user_id, key, uuid.uuid4()), fingerprint()
    for attempt in retrying():
        with attempt, get_pool().connection() as conn, conn.transaction():
            sql.idempotency.purge_expired_keys(conn, ttl_seconds=TTL_SECONDS)
            claimed = sql.idempotency.claim_key(
                conn, user_id=user_id, key=key, fingerprint=this_request, claim_token=claim.token,
                lease_seconds=graceful_timeout(current_app.config), ttl_seconds=TTL_SECONDS,
            )
            earlier = None if claimed else sql.idempotency.get_key(conn, user_id=user_id, key=key)
    if claimed:
        return claim, None
    if earlier is None:  # the first request failed and gave the key back just now
        raise Conflict(f"A request with this {HEADER} is still in progress", headers={"Retry-After": "1"})
    if earlier["fingerprint"] != this_request:
        raise ApiError(f"This {HEADER} was used for a different request", status=422)
    if earlier["status_code"] is None:
        raise Conflict(f"A request with this {HEADER} is still in progress",
                       headers={"Retry-After": str(earlier["retry_after_seconds"])})
    IDEMPOTENT_REPLAYS.labels(request.endpoint or "unknown").inc()
    return None, _replay(earlier["status_code"], earlier["response_body"])


def respond(conn: psycopg.Connection, claim: Claim | None, payload, status: int) -> Response:
    """The JSON response for `payload`, recorded under the claim in the caller's transaction (conn)."""
    response = current_app.json.response(payload)
    response.status_code = status
    if claim is not None:
        record(conn, claim, response.get_data(as_text=True), status)
    return response


def record(conn: psycopg.Connection, claim: Claim, body: str, status: int) -> None:
    """Record the response under the claim in the caller's transaction; 409 (rolling it back) if the claim was lost."""
    if not sql.idempotency.record_response(
        conn, user_id=claim.user_id, key=claim.key, claim_token=claim.token, status_code=status, response_body=body
    ):
        raise Conflict(f"Another request took over this {HEADER}")


@contextmanager
def released_on_failure(claim: Claim | None) -> Iterator[None]:
    """Give the claim back when the block fails, so that a retry with the same key runs again."""
    try:
        yield
    except BaseException:
        release(claim)
        raise


RELEASE_ATTEMPTS = 3  # after a database fault: the pooled try, then fresh connections
RELEASE_PAUSE_SECONDS = 0.2


def release(claim: Claim | None) -> None:
    """Give the claim back (its own transaction), so that a retry with the key runs again at once.

    After a database fault the pool may lend another dead connection: then each further try opens a fresh
    one, a few times with a short pause. Only if all fail does the key wait for its lease to end.
    """
    if claim is None:
        return
    params = {"user_id": claim.user_id, "key": claim.key, "claim_token": claim.token}
    for attempt in range(RELEASE_ATTEMPTS):
        try:
            if attempt == 0:
                with get_pool().connection() as conn, conn.transaction():
                    sql.idempotency.release_key(conn, **params)
            else:
                time.sleep(RELEASE_PAUSE_SECONDS * attempt)
                with psycopg.connect(current_app.config["DATABASE_URL"], autocommit=True,
                                     connect_timeout=CONNECT_TIMEOUT_SECONDS) as conn, conn.transaction():
                    sql.idempotency.release_key(conn, **params)
            return
        except (psycopg.Error, PoolTimeout) as error:
            logger.warning("could not release an idempotency key (%s, try %d of %d)",
                           type(error).__name__, attempt + 1, RELEASE_ATTEMPTS)
    logger.warning("idempotency key left claimed; it frees itself when its lease ends")


def _replay(status: int, body: str) -> Response:
    return Response(body, status=status, mimetype="application/json", headers={REPLAYED_HEADER: "true"})
