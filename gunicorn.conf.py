"""gunicorn settings used by `memlayer serve` (and so by `make run`)."""

import os

# Every public name here is read as a gunicorn setting (`config` is one), hence the underscores. This file runs
# in the master, before gevent patches the workers: it must not import what captures sockets, locks or
# select() at import time (psycopg picks its wait function then, psycopg_pool and httpx take their locks).
# tests/test_serve.py checks that it does not.
from memlayer import config as _config
from memlayer.web import server_errors as _server_errors

_settings = _config.load()
# gunicorn answers a few errors before the app sees the request (414, 431, a request line it cannot parse): in
# JSON {"detail": ...} like every other error, instead of its HTML page. Workers fork after this runs.
_server_errors.install()

bind = os.environ.get("MEMLAYER_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("MEMLAYER_WORKERS", "2"))
# gevent: each connection is a greenlet, so a client that sends its request slowly (or not at all) costs a few
# kilobytes instead of a thread, and a request waiting on the model holds neither a thread nor a database
# connection. gthread handed a connection to a thread as soon as its first bytes came, and 128 dripping
# sockets took every thread (issue 17). CPU-heavy work (password hashing) runs off the event loop.
worker_class = "gevent"
worker_connections = int(os.environ.get("MEMLAYER_WORKER_CONNECTIONS", "4000"))
# Each worker imports wsgi.py itself, so its connection pool is opened after fork, never in the master.
preload_app = False
# In-flight sends may finish at shutdown (and gthread's heartbeat may lag) for longer than a model call takes.
graceful_timeout = _config.graceful_timeout(_settings)
timeout = graceful_timeout
# Also the deadline for a request's line and headers (gunicorn's gevent worker reads them under it): a socket
# that takes longer is closed. Bodies have their own deadline (web/bodies.py).
keepalive = 5
# gunicorn's ceiling (4094 by default): ?q= of 1,000 Latin characters fits, percent-encoded CJK up to about 900.
limit_request_line = 8190
# The app logs one access line per request, with its request id.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("MEMLAYER_LOG_LEVEL", "info").lower()
# gunicorn 24+ opens a control socket at one path per user ($HOME/.gunicorn/gunicorn.ctl); several
# servers on one machine (tests, benchmarks, a second instance) would fight over it, and we never use it.
control_socket_disable = True


def worker_exit(server, worker):
    """Give the worker's pooled database, model-provider and embeddings connections back before it exits."""
    from memlayer.assistant.responders import close_all
    from memlayer.memory.embeddings import close as close_embeddings

    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions") and "memlayer.pool" in app.extensions:
        app.extensions["memlayer.pool"].close()
        close_all(app)
        close_embeddings(app)


def child_exit(server, worker):
    """A worker exited: its live gauges (the pool's) leave /metrics; its counters still count."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
