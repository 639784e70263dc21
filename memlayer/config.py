"""Settings: defaults, MEMLAYER_* environment variables, and start-up checks."""

import math
import os
from datetime import timedelta

from flask import Config
from limits import parse_many

DEV_JWT_SECRET = "memlayer-development-secret-do-not-use-in-production"
OPENAI_BASE_URL = "https://api.openai.com/v1"
OFFLINE_MODEL = "offline"


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
    DB_RETRY_ATTEMPTS = 3  # tries of a transaction that hit 40001, 40P01, 55P03 or 57014 before a 503
    # psycopg prepares a statement after this many runs; null turns it off (PgBouncer).
    PREPARE_THRESHOLD = 5

    JWT_SECRET_KEY = DEV_JWT_SECRET
    JWT_ACCESS_TOKEN_EXPIRES = timedelta(minutes=15)
    JWT_REFRESH_TOKEN_EXPIRES = timedelta(days=30)
    # OWASP's scrypt row N=2^15, r=8, p=3 (32 MiB per hash); werkzeug's plain "scrypt" is p=1, below every row.
    # Hashes made otherwise are upgraded at the user's next successful login.
    PASSWORD_HASH_METHOD = "argon2id"  # OWASP's first choice (19 MiB, t=2, p=1); scrypt hashes are upgraded at login

    # Brute-force limits (flask-limiter syntax); in-memory counters are per worker process, so with
    # several workers or hosts point RATELIMIT_STORAGE_URI at a shared store such as redis://host:6379.
    RATELIMIT_ENABLED = True
    RATELIMIT_STORAGE_URI = "memory://"
    RATELIMIT_KEY_PREFIX = "memlayer"  # keeps the counters apart from other users of a shared store
    RATELIMIT_LOGIN_PER_ADDRESS = "30 per minute; 300 per hour"
    RATELIMIT_LOGIN_PER_ACCOUNT = "5 per minute; 20 per hour"  # failed logins only
    RATELIMIT_REGISTER_PER_ADDRESS = "10 per minute; 50 per hour"
    RATELIMIT_REGISTER_PER_ACCOUNT = "5 per hour"
    PROXY_FIX_X_FOR = 0  # how many proxies in front set X-Forwarded-For (0: trust none, use the socket's peer)

    MAX_CONTENT_LENGTH = 1024 * 1024
    BODY_TIMEOUT = 20.0  # seconds a request body may take to arrive before a 408 (headers: gunicorn's keepalive)
    MAX_JSON_DEPTH = 32  # deeper request bodies are a 400
    CORS_ORIGINS = ""  # comma-separated origins allowed to call the API from a browser
    METRICS_TOKEN = None  # operator token for /health/db-pool (Authorization: Bearer ...); unset: that endpoint is off
    LOG_LEVEL = "INFO"
    LOG_FORMAT = "text"  # or "json"

    SYSTEM_PROMPT = ""  # sent first to the model when set
    RECALL_K = 5  # recalled memories shown to the responder per message; 0 turns recall off
    CONTEXT_TOKENS = 4000  # estimated token budget of everything the responder sees
    RECENT_MESSAGES = 50  # at most this many of the chat's latest messages, budget permitting

    # A language model behind the OpenAI Chat Completions API (OpenAI, Ollama, vLLM, llama.cpp, LM Studio).
    # Unset base URL and key: replies come from the built-in offline responder.
    LLM_BASE_URL = None  # e.g. http://127.0.0.1:11434/v1; OpenAI's when only LLM_API_KEY is set
    LLM_API_KEY = None
    LLM_MODEL = None  # the default model's name, required when a provider is configured
    LLM_TIMEOUT = 60.0  # seconds to wait for the provider's next bytes before a 504
    LLM_CONTEXT_WINDOW = 8192  # tokens, for the default model when configuration first adds it
    MONTHLY_TOKEN_QUOTA = None  # tokens per user per calendar month (UTC); None: no quota

    # Recall by meaning: an embedding model behind the OpenAI embeddings API (OpenAI, Ollama, vLLM, TEI).
    # Unset model: recall is lexical only. Base URL and key default to the chat provider's.
    EMBEDDING_MODEL = None  # e.g. nomic-embed-text (Ollama) or text-embedding-3-small (OpenAI)
    EMBEDDING_BASE_URL = None
    EMBEDDING_API_KEY = None
    EMBEDDING_TIMEOUT = 2.0  # seconds a send waits for its vector before recalling lexically without it

    # Memories that write themselves: after each exchange answered by a real model, `memlayer worker` asks
    # a model which facts to add, update or delete. "off": never; the offline responder never extracts.
    MEMORY_EXTRACTION = "auto"
    MEMORY_MODEL = None  # the model extraction asks (served by the chat provider); None: the chat's own model
    MEMORY_EXTRACTION_TURNS = 6  # earlier messages of the chat shown with the new one
    MEMORY_EXTRACTION_MEMORIES = 10  # existing memories most like the message, shown to be updated or deleted
    WORKER_THREADS = 4  # jobs one `memlayer worker` runs at once
    WORKER_NICE = 10  # the worker's CPU priority below the API's (os.nice): on a shared host, requests come first
    JOB_MAX_ATTEMPTS = 5  # then a job is given up (state failed)
    JOB_POLL_SECONDS = 0.5  # how often an idle worker looks for due jobs
    JOB_LEASE_SECONDS = None  # how long a claimed job is its worker's; None: longer than a model call can take


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
    if not _is_whole(config["DB_RETRY_ATTEMPTS"]) or not 1 <= config["DB_RETRY_ATTEMPTS"] <= 10:
        raise ConfigError("MEMLAYER_DB_RETRY_ATTEMPTS must be a whole number from 1 to 10")
    if not 1 <= config["POOL_MIN_SIZE"] <= config["POOL_MAX_SIZE"]:
        raise ConfigError("need 1 <= MEMLAYER_POOL_MIN_SIZE <= MEMLAYER_POOL_MAX_SIZE")
    for name, low, high in (("RECALL_K", 0, 50), ("CONTEXT_TOKENS", 256, 10_000_000), ("RECENT_MESSAGES", 0, 1000)):
        value = config[name]
        if not _is_whole(value) or not low <= value <= high:
            raise ConfigError(f"MEMLAYER_{name} must be a whole number from {low} to {high}")
    if isinstance(config["BODY_TIMEOUT"], bool) or not isinstance(config["BODY_TIMEOUT"], int | float) \
            or not 0 < config["BODY_TIMEOUT"] <= 3600:
        raise ConfigError("MEMLAYER_BODY_TIMEOUT must be a number of seconds above 0 and at most 3600")
    if not _valid_hash_method(str(config["PASSWORD_HASH_METHOD"])):
        raise ConfigError("MEMLAYER_PASSWORD_HASH_METHOD must be 'argon2id', 'argon2id:<time>:<memory KiB>:<lanes>' "
                          "or a werkzeug method such as 'scrypt:32768:8:3'")
    if config["MEMORY_EXTRACTION"] not in ("auto", "off"):
        raise ConfigError("MEMLAYER_MEMORY_EXTRACTION must be 'auto' or 'off'")
    for name, low, high in (("WORKER_THREADS", 1, 256), ("JOB_MAX_ATTEMPTS", 1, 100), ("WORKER_NICE", 0, 19),
                            ("MEMORY_EXTRACTION_TURNS", 0, 50), ("MEMORY_EXTRACTION_MEMORIES", 0, 100)):
        if not _is_whole(config[name]) or not low <= config[name] <= high:
            raise ConfigError(f"MEMLAYER_{name} must be a whole number from {low} to {high}")
    _check_rate_limits(config)
    _check_llm(config)
    _check_embeddings(config)


def _valid_hash_method(method: str) -> bool:
    if method == "argon2id":
        return True
    if method.startswith("argon2id:"):
        parts = method.split(":")[1:]
        return len(parts) == 3 and all(part.isdigit() and int(part) > 0 for part in parts) and int(parts[1]) >= 8
    return method.startswith(("scrypt", "pbkdf2"))


def _is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_rate_limits(config) -> None:
    for name in ("RATELIMIT_LOGIN_PER_ADDRESS", "RATELIMIT_LOGIN_PER_ACCOUNT",
                 "RATELIMIT_REGISTER_PER_ADDRESS", "RATELIMIT_REGISTER_PER_ACCOUNT"):
        try:
            parse_many(str(config[name]))
        except ValueError:
            raise ConfigError(f"MEMLAYER_{name} must be limits like '5 per minute; 20 per hour'") from None
    if not _is_whole(config["PROXY_FIX_X_FOR"]) or not 0 <= config["PROXY_FIX_X_FOR"] <= 5:
        raise ConfigError("MEMLAYER_PROXY_FIX_X_FOR must be a whole number from 0 to 5")
    if not _is_whole(config["MAX_JSON_DEPTH"]) or not 2 <= config["MAX_JSON_DEPTH"] <= 256:
        raise ConfigError("MEMLAYER_MAX_JSON_DEPTH must be a whole number from 2 to 256")


def _check_llm(config) -> None:
    base_url = llm_base_url(config)
    if base_url is not None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError("MEMLAYER_LLM_BASE_URL must start with http:// or https://")
        if not config.get("LLM_MODEL"):
            raise ConfigError("MEMLAYER_LLM_MODEL must name the model to use when a provider is configured")
    timeout = config["LLM_TIMEOUT"]
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
        raise ConfigError("MEMLAYER_LLM_TIMEOUT must be a number of seconds above 0 and at most 3600")
    if not _is_whole(config["LLM_CONTEXT_WINDOW"]) or config["LLM_CONTEXT_WINDOW"] < 512:
        raise ConfigError("MEMLAYER_LLM_CONTEXT_WINDOW must be a whole number of at least 512")
    quota = config["MONTHLY_TOKEN_QUOTA"]
    if quota is not None and (not _is_whole(quota) or quota < 1):
        raise ConfigError("MEMLAYER_MONTHLY_TOKEN_QUOTA must be a whole number of at least 1 (or unset)")


def _check_embeddings(config) -> None:
    timeout = config["EMBEDDING_TIMEOUT"]
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 60:
        raise ConfigError("MEMLAYER_EMBEDDING_TIMEOUT must be a number of seconds above 0 and at most 60")
    if not config.get("EMBEDDING_MODEL"):
        return
    base_url = embedding_base_url(config)
    if base_url is None:
        raise ConfigError("MEMLAYER_EMBEDDING_MODEL needs a server: set MEMLAYER_EMBEDDING_BASE_URL "
                          "(or MEMLAYER_LLM_BASE_URL, which it defaults to)")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError("MEMLAYER_EMBEDDING_BASE_URL must start with http:// or https://")


def embedding_base_url(config) -> str | None:
    """Where the embeddings server lives: MEMLAYER_EMBEDDING_BASE_URL, else the chat provider's."""
    base_url = config.get("EMBEDDING_BASE_URL")
    if base_url:
        return str(base_url).rstrip("/")
    if config.get("EMBEDDING_API_KEY") and not llm_base_url(config):
        return OPENAI_BASE_URL
    return llm_base_url(config)


def embedding_api_key(config) -> str | None:
    """The embeddings server's key: MEMLAYER_EMBEDDING_API_KEY, else the chat provider's when it is that server.

    A chat key is never sent to an embeddings server configured apart from the chat provider.
    """
    key = config.get("EMBEDDING_API_KEY") or (None if config.get("EMBEDDING_BASE_URL") else config.get("LLM_API_KEY"))
    return str(key) if key else None


def llm_base_url(config) -> str | None:
    """Where the OpenAI-compatible provider lives: the configured URL, OpenAI's when only a key is set, else None."""
    base_url = config.get("LLM_BASE_URL")
    if base_url:
        return str(base_url).rstrip("/")
    if config.get("LLM_API_KEY"):
        return OPENAI_BASE_URL
    return None


def llm_api_key(config) -> str | None:
    """The provider's API key as text (environment values are parsed as JSON, so digits arrive as numbers)."""
    key = config.get("LLM_API_KEY")
    return str(key) if key else None


def default_model(config) -> str:
    """The model of chats that did not choose one: MEMLAYER_LLM_MODEL with a provider, else the offline responder."""
    return str(config["LLM_MODEL"]) if llm_base_url(config) else OFFLINE_MODEL


def graceful_timeout(config) -> int:
    """Whole seconds gunicorn lets in-flight requests finish at shutdown: longer than a model call may take."""
    return math.ceil(float(config["LLM_TIMEOUT"])) + 15


def cors_origins(config) -> list[str]:
    """The configured CORS origins as a list."""
    raw = config.get("CORS_ORIGINS") or ""
    if isinstance(raw, (list, tuple)):
        return [str(origin) for origin in raw]
    return [origin.strip() for origin in str(raw).split(",") if origin.strip()]


def job_lease_seconds(config) -> float:
    """How long a claimed job is a worker's before another may take it: longer than a model call can last."""
    if config["JOB_LEASE_SECONDS"] is not None:
        return float(config["JOB_LEASE_SECONDS"])
    return float(config["LLM_TIMEOUT"]) + float(config["EMBEDDING_TIMEOUT"]) + 30


def extraction_enabled(config) -> bool:
    """Whether sends queue memory extraction at all (MEMLAYER_MEMORY_EXTRACTION=auto and a model provider)."""
    return config["MEMORY_EXTRACTION"] == "auto" and llm_base_url(config) is not None
