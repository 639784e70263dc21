"""gunicorn settings used by `memlayer serve` (and so by `make run`)."""

import os

# Every public name here is read as a gunicorn setting (`config` is one), hence the underscores.
from memlayer import config as _config
from memlayer.assistant.responders import close_all as _close_all
from memlayer.memory.embeddings import close as _close_embeddings
from memlayer.web import server_errors as _server_errors

_settings = _config.load()
# gunicorn answers a few errors before the app sees the request (414, 431, a request line it cannot parse): in
# JSON {"detail": ...} like every other error, instead of its HTML page. Workers fork after this runs.
_server_errors.install()

bind = os.environ.get("MEMLAYER_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("MEMLAYER_WORKERS", "2"))
# gthread: each request gets a thread, and a thread waiting on the model (or relaying its stream) holds no
# database connection and blocks nobody else. Threads are cheap while they wait, so there are many:
# 2 workers x 64 threads serve 128 requests at once, e.g. 64 slow model calls with room to spare.
worker_class = "gthread"
threads = int(os.environ.get("MEMLAYER_THREADS", "64"))
# Each worker imports wsgi.py itself, so its connection pool is opened after fork, never in the master.
preload_app = False
# In-flight sends may finish at shutdown (and gthread's heartbeat may lag) for longer than a model call takes.
graceful_timeout = _config.graceful_timeout(_settings)
timeout = graceful_timeout
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
    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions") and "memlayer.pool" in app.extensions:
        app.extensions["memlayer.pool"].close()
        _close_all(app)
        _close_embeddings(app)
