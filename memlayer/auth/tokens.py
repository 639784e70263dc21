"""JWT access and refresh tokens (flask-jwt-extended), revocation persisted in PostgreSQL."""

import functools
import logging
import time
import uuid
from datetime import datetime, timedelta, timezone

import flask_jwt_extended.view_decorators
from flask import Flask, current_app
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    create_refresh_token,
    get_jti,
    get_jwt,
    get_jwt_identity,
    get_unverified_jwt_headers,
)

from memlayer.storage.db import get_pool, retrying, sql
from memlayer.web.errors import error_response

logger = logging.getLogger(__name__)

VERIFIED_TOKENS_KEY = "memlayer.verified_tokens"
VERIFIED_TOKENS_KEPT = 2048  # per app (worker), about 3 MB at most; forgotten all at once when full


class VerifyingOnceJWTManager(JWTManager):
    """flask-jwt-extended's manager, with each distinct token verified once per app instead of decoded 3 times a request.

    The library decodes a token three times per request: its claims and header unverified (for a decode-key
    callback, which MemLayer does not set), then verified. A token's verified claims never change, so they are
    kept per app (an app's secret is its own) and a token seen again only has its expiry checked; a new,
    expired or CSRF-bound token takes the library's path, with its errors. Revocation is still checked on
    every request (token_in_blocklist_loader).
    """

    def _decode_jwt_from_config(self, encoded_token: str, csrf_value=None, allow_expired: bool = False) -> dict:
        """The token's verified claims: kept ones while unexpired, else the library's decoding (which raises)."""
        if csrf_value is not None or allow_expired:
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        verified = current_app.extensions.setdefault(VERIFIED_TOKENS_KEY, {})
        claims = verified.get(encoded_token)
        if claims is None or not _unexpired(claims):
            claims = super()._decode_jwt_from_config(encoded_token)
            if len(verified) >= VERIFIED_TOKENS_KEPT:
                verified.clear()
            verified[encoded_token] = claims
        return dict(claims)  # the caller's own copy: flask-jwt-extended keeps it on flask.g


def _unexpired(claims: dict) -> bool:
    """Whether verified claims are still within their expiry (and the configured leeway)."""
    expires = claims.get("exp")
    leeway = current_app.config.get("JWT_DECODE_LEEWAY", 0)
    leeway = leeway.total_seconds() if isinstance(leeway, timedelta) else leeway
    return expires is None or time.time() < expires + leeway


@functools.lru_cache(maxsize=VERIFIED_TOKENS_KEPT)
def _header_of(encoded_token: str) -> dict:
    return get_unverified_jwt_headers(encoded_token)


def unverified_header(encoded_token: str) -> dict:
    """A token's header, decoded once per worker (a copy): what flask-jwt-extended asks for on every request.

    The library reads the header, unverified, after verifying the token; PyJWT now checks each of the token's
    characters in Python to do it, 13% of a chats page's instructions (make bench-instructions). The header
    is a pure function of the token's text, so keeping it changes no answer; tests/test_token_verification.py
    fails if the library stops asking this function.
    """
    return dict(_header_of(encoded_token))


# The library imported the function by name into view_decorators, where jwt_required calls it.
flask_jwt_extended.view_decorators.get_unverified_jwt_headers = unverified_header
jwt = VerifyingOnceJWTManager()

# Claim on an access token naming the refresh token it belongs to, so logout revokes both.
REFRESH_JTI_CLAIM = "rjti"


def issue_tokens(user_id: uuid.UUID, *, fresh: bool) -> dict:
    """A new refresh token and an access token paired with it.

    `fresh` marks an access token made from a password (register, login); only such a token may delete the account.
    """
    refresh_token = create_refresh_token(identity=str(user_id))
    refresh_jti = get_jti(refresh_token)
    access_token = create_access_token(
        identity=str(user_id), fresh=fresh, additional_claims={REFRESH_JTI_CLAIM: refresh_jti}
    )
    return {"access_token": access_token, "token_type": "bearer", "refresh_token": refresh_token}


def current_user_id() -> uuid.UUID:
    """The id of the user the request's token belongs to."""
    return uuid.UUID(get_jwt_identity())


def revocations_for_current_token() -> list[dict]:
    """The revocation rows that logging out with the current token must write."""
    claims = get_jwt()
    user_id = current_user_id()
    rows = [current_token_revocation()]
    refresh_jti = claims.get(REFRESH_JTI_CLAIM)
    if refresh_jti:
        # Its exact expiry is unknown here; the longest a refresh token lives is a safe bound.
        refresh_lifetime = _as_timedelta(current_app.config["JWT_REFRESH_TOKEN_EXPIRES"])
        rows.append({"jti": refresh_jti, "user_id": user_id, "expires_at": _now() + refresh_lifetime})
    return rows


def current_token_revocation() -> dict:
    """The revocation row of the presented token itself (kept until the token would have expired)."""
    claims = get_jwt()
    return {"jti": claims["jti"], "user_id": current_user_id(), "expires_at": _from_timestamp(claims["exp"])}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _from_timestamp(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _as_timedelta(value) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=int(value))


@jwt.token_in_blocklist_loader
def _token_is_revoked(jwt_header: dict, jwt_payload: dict) -> bool:
    try:
        jti = uuid.UUID(jwt_payload["jti"])
        user_id = uuid.UUID(jwt_payload["sub"])
    except (KeyError, ValueError, TypeError):
        return True
    # One read statement: in autocommit it is a transaction of its own, and BEGIN/COMMIT would only add
    # two round trips to every authenticated request.
    for attempt in retrying():
        with attempt, get_pool().connection() as conn:
            return not sql.tokens.token_is_usable(conn, jti=jti, user_id=user_id)


def _unauthorized(detail: str):
    return error_response(401, detail, {"WWW-Authenticate": "Bearer"})


@jwt.unauthorized_loader
def _missing_token(reason: str):
    return _unauthorized("Not authenticated: missing bearer token")


@jwt.invalid_token_loader
def _invalid_token(reason: str):
    return _unauthorized("Invalid token")


@jwt.expired_token_loader
def _expired_token(jwt_header: dict, jwt_payload: dict):
    return _unauthorized("Token has expired; log in again or refresh")


@jwt.revoked_token_loader
def _revoked_token(jwt_header: dict, jwt_payload: dict):
    return _unauthorized("Token has been revoked")


@jwt.needs_fresh_token_loader
def _needs_fresh_token(jwt_header: dict, jwt_payload: dict):
    return _unauthorized("Fresh token required")


@jwt.token_verification_failed_loader
@jwt.user_lookup_error_loader
def _claims_rejected(jwt_header: dict, jwt_payload: dict):
    return _unauthorized("Invalid token")


def init_app(app: Flask) -> None:
    """Wire flask-jwt-extended into the app: header tokens only, errors as JSON 401s."""
    app.config.setdefault("JWT_TOKEN_LOCATION", ["headers"])
    # Tokens travel in headers only, so the cookie CSRF claim would be dead weight.
    app.config.setdefault("JWT_COOKIE_CSRF_PROTECT", False)
    app.config["JWT_ERROR_MESSAGE_KEY"] = "detail"
    jwt.init_app(app)
