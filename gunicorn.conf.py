"""gunicorn settings used by `memlayer serve` (and so by `make run`)."""

import os

bind = os.environ.get("MEMLAYER_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("MEMLAYER_WORKERS", "2"))
# Threads let one slow request (a model call) not block the others in the same worker.
worker_class = "gthread"
threads = int(os.environ.get("MEMLAYER_THREADS", "4"))
# Each worker imports wsgi.py itself, so its connection pool is opened after fork, never in the master.
preload_app = False
timeout = 60
graceful_timeout = 30
keepalive = 5
# The app logs one access line per request, with its request id.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("MEMLAYER_LOG_LEVEL", "info").lower()
# gunicorn 24+ opens a control socket at one path per user ($HOME/.gunicorn/gunicorn.ctl); several
# servers on one machine (tests, benchmarks, a second instance) would fight over it, and we never use it.
control_socket_disable = True


def worker_exit(server, worker):
    """Give the worker's pooled connections back to PostgreSQL before it exits."""
    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions") and "memlayer.pool" in app.extensions:
        app.extensions["memlayer.pool"].close()
