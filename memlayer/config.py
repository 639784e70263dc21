"""Settings: defaults, MEMLAYER_* environment variables, and start-up checks."""

import os
from datetime import timedelta

from flask import Config

DEV_JWT_SECRET = "memlayer-development-secret-do-not-use-in-production"


class Defaults:
    """Values used when neither the environment nor the caller sets one."""

    ENV = "development"  # "production" turns on the strict checks below
    DATABASE_URL = None  # None: start the embedded PostgreSQL under DATA_DIR
    DATA_DIR = ".memlayer"

    POOL_MIN_SIZE = 2
    POOL_MAX_SIZE = 10
    POOL_TIMEOUT = 5.0  # seconds a request waits for a connection before a 503
    STATEMENT_TIMEOUT_MS = 10_000
    LOCK_TIMEOUT_MS = 3_000
    # psycopg prepares a statement after this many runs; null turns it off (PgBouncer).
    PREPARE_THRESHOLD = 5

    JWT_SECRET_KEY = DEV_JWT_SECRET
    JWT_ACCESS_TOKEN_EXPIRES = timedelta(minutes=15)
    JWT_REFRESH_TOKEN_EXPIRES = timedelta(days=30)
    PASSWORD_HASH_METHOD = "scrypt"

    MAX_CONTENT_LENGTH = 1024 * 1024
    CORS_ORIGINS = ""  # comma-separated origins allowed to call the API from a browser
    LOG_LEVEL = "INFO"
    LOG_FORMAT = "text"  # or "json"

    SYSTEM_PROMPT = ""  # sent first to the model when set
    RECALL_K = 5  # recalled memories shown to the responder per message; 0 turns recall off
    CONTEXT_TOKENS = 4000  # estimated token budget of everything the responder sees
    RECENT_MESSAGES = 50  # at most this many of the chat's latest messages, budget permitting


def load() -> Config:
    """Defaults overlaid with MEMLAYER_* environment variables (values parsed as JSON when they are)."""
    settings = Config(os.getcwd())
    settings.from_object(Defaults)
    settings.from_prefixed_env("MEMLAYER")
    return settings


class ConfigError(RuntimeError):
    """The configuration is unsafe or inconsistent; the service must not start."""


def check(config) -> None:
    """Refuse settings that would make the service unsafe or unusable."""
    if config["ENV"] == "production":
        secret = config.get("JWT_SECRET_KEY") or ""
        if secret == DEV_JWT_SECRET or len(secret) < 32:
            raise ConfigError(
                "MEMLAYER_JWT_SECRET_KEY must be set to a random string of at least "
                "32 characters when MEMLAYER_ENV=production"
            )
    if config["LOG_FORMAT"] not in ("text", "json"):
        raise ConfigError("MEMLAYER_LOG_FORMAT must be 'text' or 'json'")
    if not 1 <= config["POOL_MIN_SIZE"] <= config["POOL_MAX_SIZE"]:
        raise ConfigError("need 1 <= MEMLAYER_POOL_MIN_SIZE <= MEMLAYER_POOL_MAX_SIZE")
    for name, low, high in (("RECALL_K", 0, 50), ("CONTEXT_TOKENS", 256, 10_000_000), ("RECENT_MESSAGES", 0, 1000)):
        value = config[name]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ConfigError(f"MEMLAYER_{name} must be a whole number from {low} to {high}")


def cors_origins(config) -> list[str]:
    """The configured CORS origins as a list."""
    raw = config.get("CORS_ORIGINS") or ""
    if isinstance(raw, (list, tuple)):
        return [str(origin) for origin in raw]
    return [origin.strip() for origin in str(raw).split(",") if origin.strip()]
