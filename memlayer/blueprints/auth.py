"""/auth: register, log in, refresh, log out, and who am I."""

from datetime import datetime, timezone

from flask import Blueprint, Response, request
from flask_jwt_extended import jwt_required
from werkzeug.wsgi import wrap_file

from memlayer.assistant.archive import export_filename, spooled_export
from memlayer.auth.passwords import hash_password, needs_rehash, verify_password
from memlayer.auth.tokens import current_token_revocation, current_user_id, issue_tokens, revocations_for_current_token
from memlayer.storage.db import get_pool, retrying, sql
from memlayer.web.errors import Conflict, NotFound, Unauthorized
from memlayer.web.schemas import LoginSchema, RegisterSchema, TokenSchema, UserSchema, UserUpdateSchema, load_body

bp = Blueprint("auth", __name__, url_prefix="/auth")

_register = RegisterSchema()
_login = LoginSchema()
_tokens = TokenSchema()
_user = UserSchema()
_user_update = UserUpdateSchema()


@bp.post("/register")
def register():
    """Create an account and log it in."""
    body = load_body(_register)
    password_hash = hash_password(body["password"])
    for attempt in retrying():
        with attempt, get_pool().connection() as conn, conn.transaction():
            user = sql.users.create_user(conn, email=body["email"], password_hash=password_hash)
    if user is None:
        raise Conflict("Email already registered")
    return _tokens.dump(issue_tokens(user["id"], fresh=True)), 201


@bp.post("/login")
def login():
    """Exchange email and password for tokens."""
    body = load_body(_login)
    for attempt in retrying():
        with attempt, get_pool().connection() as conn, conn.transaction():
            user = sql.users.get_user_by_email(conn, email=body["email"])
    if not verify_password(user["password_hash"] if user else None, body["password"]):
        raise Unauthorized("Incorrect email or password", headers={"WWW-Authenticate": "Bearer"})
    if needs_rehash(user["password_hash"]):
        upgraded = hash_password(body["password"])  # hashed with no connection borrowed
        for attempt in retrying():
            with attempt, get_pool().connection() as conn, conn.transaction():
                sql.users.upgrade_password_hash(conn, user_id=user["id"], old_hash=user["password_hash"], new_hash=upgraded)
    return _tokens.dump(issue_tokens(user["id"], fresh=True))


@bp.post("/refresh")
@jwt_required(refresh=True)
def refresh():
    """Spend a refresh token for a new token pair; the presented refresh token stops working (rotation)."""
    spent = current_token_revocation()
    for attempt in retrying():
        with attempt, get_pool().connection() as conn, conn.transaction():
            first_use = sql.tokens.revoke_refresh_token(conn, **spent)
            sql.tokens.purge_expired_revocations(conn)
    if not first_use:
        raise Unauthorized("Token has been revoked", headers={"WWW-Authenticate": "Bearer"})
    return _tokens.dump(issue_tokens(spent["user_id"], fresh=False))


@bp.post("/logout")
@jwt_required(verify_type=False)
def logout():
    """Revoke the presented token (and, for an access token, its refresh token)."""
    revocations = revocations_for_current_token()
    for attempt in retrying():
        with attempt, get_pool().connection() as conn, conn.transaction():
            for revocation in revocations:
                sql.tokens.revoke_token(conn, **revocation)
            sql.tokens.purge_expired_revocations(conn)
    return "", 204


@bp.delete("/me")
@jwt_required(fresh=True)
def delete_me():
    """Delete the account and everything in it, for good; needs an access token from a password (login or register)."""
    for attempt in retrying():
        with attempt, get_pool().connection() as conn, conn.transaction():
            deleted = sql.users.delete_user(conn, user_id=current_user_id())
    if not deleted:
        raise NotFound("User not found")
    return "", 204


@bp.get("/me/export")
@jwt_required(fresh=True)
def export_me():
    """Everything of the user as one JSON download, from one consistent snapshot; needs a fresh token.

    Written to a temporary file first, so the download takes no database connection however slow it is.
    """
    now = datetime.now(timezone.utc)
    spool = spooled_export(current_user_id(), now)
    if spool is None:
        raise NotFound("User not found")
    return Response(wrap_file(request.environ, spool, buffer_size=64 * 1024), mimetype="application/json",
                    direct_passthrough=True,
                    headers={"Content-Disposition": f"attachment; filename={export_filename(now.date())}"})


@bp.get("/me")
@jwt_required()
def me():
    """The authenticated user's profile."""
    for attempt in retrying():
        with attempt, get_pool().connection() as conn, conn.transaction():
            user = sql.users.get_user(conn, user_id=current_user_id())
    if user is None:
        raise NotFound("User not found")
    return _user.dump(user)


@bp.patch("/me")
@jwt_required()
def update_me():
    """Change the user's settings (today: whether memories are extracted from their messages)."""
    body = load_body(_user_update)
    for attempt in retrying():
        with attempt, get_pool().connection() as conn, conn.transaction():
            user = sql.users.update_settings(conn, user_id=current_user_id(),
                                             memory_extraction=body.get("memory_extraction"))
    if user is None:
        raise NotFound("User not found")
    return _user.dump(user)
