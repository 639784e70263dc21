"""Brute-force limits on login and register, per client address and per account (flask-limiter)."""

import hashlib
import logging
import math
import time

from flask import Flask, request
from flask_limiter import Limiter, RequestLimit
from flask_limiter.util import get_remote_address

from memlayer.web.errors import TooManyRequests
from memlayer.web.metrics import RATE_LIMITED

logger = logging.getLogger(__name__)

# Which views are limited, and by which settings (strings like "5 per minute; 20 per hour").
LIMITED_VIEWS = {
    "auth.login": ("RATELIMIT_LOGIN_PER_ADDRESS", "RATELIMIT_LOGIN_PER_ACCOUNT"),
    "auth.register": ("RATELIMIT_REGISTER_PER_ADDRESS", "RATELIMIT_REGISTER_PER_ACCOUNT"),
}


def account_key() -> str:
    """The account a login or register body names, hashed so that emails never reach the limiter's logs."""
    body = request.get_json(silent=True)
    email = body.get("email") if isinstance(body, dict) else None
    if not isinstance(email, str):
        return "account:none"
    return "account:" + hashlib.sha256(email.strip().lower().encode("utf-8", "replace")).hexdigest()[:32]


def address_key() -> str:
    """The client's address (behind a proxy, the one MEMLAYER_PROXY_FIX_X_FOR trusts)."""
    return "address:" + (get_remote_address() or "unknown")


def _counts_against_account(response) -> bool:
    # A correct password must not use up the account's allowance; failed logins and every registration do.
    return response.status_code != 200


def _refuse(limit: RequestLimit):
    RATE_LIMITED.labels(request.endpoint or "unknown").inc()
    raise TooManyRequests(
        "Too many attempts, please wait before trying again",
        retry_after_seconds=math.ceil(limit.window[0] - time.time()),
    )


def _not_a_limited_view() -> bool:
    return request.endpoint not in LIMITED_VIEWS


def init_app(app: Flask) -> None:
    """Give this app its own limiter (storage per app) and wrap the limited views; off when RATELIMIT_ENABLED is false."""
    if not app.config["RATELIMIT_ENABLED"]:
        return
    # flask-limiter reads RATELIMIT_STORAGE_URI and RATELIMIT_KEY_PREFIX from the app's config.
    limiter = Limiter(address_key, app=app, on_breach=_refuse, strategy="moving-window")
    # Only the wrapped views have limits; this lets every other request skip resolving them in
    # flask-limiter's before_request hook (a measurable share of a send's CPU, issue 6).
    limiter.request_filter(_not_a_limited_view)
    for endpoint, (per_address, per_account) in LIMITED_VIEWS.items():
        view = app.view_functions[endpoint]
        view = limiter.limit(app.config[per_account], key_func=account_key, scope="account",
                             deduct_when=_counts_against_account)(view)
        view = limiter.limit(app.config[per_address], key_func=address_key, scope="address")(view)
        app.view_functions[endpoint] = view
    app.extensions["memlayer.limiter"] = limiter
