"""Password hashing with werkzeug.security (scrypt); always called with no connection borrowed."""

from functools import lru_cache

from flask import current_app
from werkzeug.security import check_password_hash, generate_password_hash


def hash_password(password: str) -> str:
    """Hash a password with the configured method."""
    return generate_password_hash(password, method=current_app.config["PASSWORD_HASH_METHOD"])


def needs_rehash(stored_hash: str) -> bool:
    """Whether a stored hash was made with other parameters than the configured method's (e.g. werkzeug's p=1)."""
    return stored_hash.split("$", 1)[0] != _dummy_hash(current_app.config["PASSWORD_HASH_METHOD"]).split("$", 1)[0]


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Check a password; with no stored hash, spend the same time on a dummy and fail."""
    if stored_hash is None:
        check_password_hash(_dummy_hash(current_app.config["PASSWORD_HASH_METHOD"]), password)
        return False
    return check_password_hash(stored_hash, password)


@lru_cache(maxsize=4)
def _dummy_hash(method: str) -> str:
    # Unknown emails are checked against this so they cost as much as wrong passwords.
    return generate_password_hash("memlayer-dummy-password", method=method)
