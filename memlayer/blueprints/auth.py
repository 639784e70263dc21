"""/auth: register, log in, refresh, log out, and who am I."""

from flask import Blueprint
from flask_jwt_extended import get_jwt, jwt_required

from memlayer.db import get_pool, sql
from memlayer.errors import Conflict, NotFound, Unauthorized
from memlayer.passwords import hash_password, needs_rehash, verify_password
from memlayer.schemas import AccessTokenSchema, LoginSchema, RegisterSchema, TokenSchema, UserSchema, load_body
from memlayer.tokens import current_user_id, issue_access_token, issue_tokens, revocations_for_current_token

bp = Blueprint("auth", __name__, url_prefix="/auth")

_register = RegisterSchema()
_login = LoginSchema()
_tokens = TokenSchema()
_access_token = AccessTokenSchema()
_user = UserSchema()


@bp.post("/register")
def register():
    """Create an account and log it in."""
    body = load_body(_register)
    password_hash = hash_password(body["password"])
    with get_pool().connection() as conn, conn.transaction():
        user = sql.users.create_user(conn, email=body["email"], password_hash=password_hash)
    if user is None:
        raise Conflict("Email already registered")
    return _tokens.dump(issue_tokens(user["id"])), 201


@bp.post("/login")
def login():
    """Exchange email and password for tokens."""
    body = load_body(_login)
    with get_pool().connection() as conn, conn.transaction():
        user = sql.users.get_user_by_email(conn, email=body["email"])
    if not verify_password(user["password_hash"] if user else None, body["password"]):
        raise Unauthorized("Incorrect email or password", headers={"WWW-Authenticate": "Bearer"})
    if needs_rehash(user["password_hash"]):
        upgraded = hash_password(body["password"])  # hashed with no connection borrowed
        with get_pool().connection() as conn, conn.transaction():
            sql.users.upgrade_password_hash(conn, user_id=user["id"], old_hash=user["password_hash"], new_hash=upgraded)
    return _tokens.dump(issue_tokens(user["id"]))


@bp.post("/refresh")
@jwt_required(refresh=True)
def refresh():
    """Exchange a refresh token for a new access token."""
    return _access_token.dump(issue_access_token(current_user_id(), get_jwt()["jti"]))


@bp.post("/logout")
@jwt_required(verify_type=False)
def logout():
    """Revoke the presented token (and, for an access token, its refresh token)."""
    revocations = revocations_for_current_token()
    with get_pool().connection() as conn, conn.transaction():
        for revocation in revocations:
            sql.tokens.revoke_token(conn, **revocation)
        sql.tokens.purge_expired_revocations(conn)
    return "", 204


@bp.delete("/me")
@jwt_required()
def delete_me():
    """Delete the account and everything in it, for good; its tokens stop working."""
    with get_pool().connection() as conn, conn.transaction():
        deleted = sql.users.delete_user(conn, user_id=current_user_id())
    if not deleted:
        raise NotFound("User not found")
    return "", 204


@bp.get("/me")
@jwt_required()
def me():
    """The authenticated user's profile."""
    with get_pool().connection() as conn, conn.transaction():
        user = sql.users.get_user(conn, user_id=current_user_id())
    if user is None:
        raise NotFound("User not found")
    return _user.dump(user)
