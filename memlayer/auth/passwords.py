"""Password hashing with werkzeug.security (scrypt); always called with no connection borrowed."""

import threading
from functools import lru_cache

from flask import current_app
from werkzeug.security import check_password_hash, generate_password_hash

from memlayer.web.cooperative import off_the_event_loop

# scrypt takes 32 MiB and a core for about a quarter of a second per hash. More hashes at once than one
# per worker add no throughput on a busy host, only memory (a login burst on 64 threads grew a worker to
# 530 MB) and CPU taken from every other request; so each worker process hashes one password at a time,
# in a thread of its own so that the worker's other requests (greenlets) keep being answered meanwhile.
_hashing = threading.BoundedSemaphore(1)


def hash_password(password: str) -> str:
    """Hash a password with the configured method."""
    method = current_app.config["PASSWORD_HASH_METHOD"]
    with _hashing:
        return off_the_event_loop(generate_password_hash, password, method)


def needs_rehash(stored_hash: str) -> bool:
    """Whether a stored hash was made with other parameters than the configured method's (e.g. werkzeug's p=1)."""
    return stored_hash.split("$", 1)[0] != _dummy_hash(current_app.config["PASSWORD_HASH_METHOD"]).split("$", 1)[0]


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Check a password; with no stored hash, spend the same time on a dummy and fail."""
    dummy = _dummy_hash(current_app.config["PASSWORD_HASH_METHOD"]) if stored_hash is None else None
    with _hashing:
        if dummy is not None:
            off_the_event_loop(check_password_hash, dummy, password)
            return False
        return off_the_event_loop(check_password_hash, stored_hash, password)


@lru_cache(maxsize=4)
def _dummy_hash(method: str) -> str:
    # Unknown emails are checked against this so they cost as much as wrong passwords.
    return off_the_event_loop(generate_password_hash, "memlayer-dummy-password", method)
