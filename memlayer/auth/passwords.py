"""Password hashing: Argon2id (argon2-cffi) for new hashes, older scrypt hashes still accepted and upgraded at login.

Always called with no connection borrowed, and off the event loop (hashing is the one CPU-heavy step).
"""

import threading
from functools import lru_cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from werkzeug.security import check_password_hash, generate_password_hash

from memlayer.web.cooperative import off_the_event_loop

# OWASP's Password Storage Cheat Sheet, first choice: Argon2id with 19 MiB, 2 iterations, 1 lane.
ARGON2 = "argon2id"
ARGON2_DEFAULTS = (2, 19_456, 1)  # time cost, memory cost in KiB, parallelism

# More hashes at once than one per worker add no throughput on a busy host, only memory and CPU taken from
# every other request; so each worker process hashes one password at a time, in a thread of its own so
# that the worker's other requests (greenlets) keep being answered meanwhile.
_hashing = threading.BoundedSemaphore(1)


def make_hash(password: str, method: str) -> str:
    """Hash a password with a method: "argon2id" or "argon2id:<time>:<memory KiB>:<lanes>", or werkzeug's ("scrypt:...")."""
    hasher = _argon2(method)
    if hasher is not None:
        return hasher.hash(password)
    return generate_password_hash(password, method=method)


def check_hash(stored_hash: str, password: str) -> bool:
    """Whether a password matches a stored hash of either kind (Argon2 reads its parameters from the hash)."""
    if stored_hash.startswith("$argon2"):
        try:
            return PasswordHasher().verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False
    return check_password_hash(stored_hash, password)


def hash_password(password: str) -> str:
    """Hash a password with the configured method."""
    method = current_app.config["PASSWORD_HASH_METHOD"]
    with _hashing:
        return off_the_event_loop(make_hash, password, method)


def needs_rehash(stored_hash: str) -> bool:
    """Whether a stored hash was made another way than the configured method (scrypt, or other parameters)."""
    return hash_parameters(stored_hash) != hash_parameters(_dummy_hash(current_app.config["PASSWORD_HASH_METHOD"]))


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Check a password; with no stored hash, spend the same time on a dummy and fail."""
    dummy = _dummy_hash(current_app.config["PASSWORD_HASH_METHOD"]) if stored_hash is None else None
    with _hashing:
        if dummy is not None:
            off_the_event_loop(check_hash, dummy, password)
            return False
        return off_the_event_loop(check_hash, stored_hash, password)


def hash_parameters(stored_hash: str) -> str:
    """The part of a hash that names its method and parameters ("$argon2id$v=19$m=...,t=...,p=..." or "scrypt:N:r:p")."""
    if stored_hash.startswith("$argon2"):
        return "$".join(stored_hash.split("$")[:4])
    return stored_hash.split("$", 1)[0]


@lru_cache(maxsize=8)
def _argon2(method: str) -> PasswordHasher | None:
    if method != ARGON2 and not method.startswith(ARGON2 + ":"):
        return None
    time_cost, memory_cost, parallelism = (
        ARGON2_DEFAULTS if method == ARGON2 else (int(part) for part in method.split(":")[1:4]))
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID)


@lru_cache(maxsize=4)
def _dummy_hash(method: str) -> str:
    # Unknown emails are checked against this so they cost as much as wrong passwords.
    return off_the_event_loop(make_hash, "memlayer-dummy-password", method)
