"""Living with gunicorn's gevent worker: CPU-heavy calls off the event loop, and deadlines on slow clients."""

import sys
from contextlib import AbstractContextManager, nullcontext


class DeadlinePassed(Exception):
    """A deadline set with `deadline` passed inside its block."""


def serving_cooperatively() -> bool:
    """Whether this process runs under gevent's monkey-patching (a gunicorn gevent worker)."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("socket"))


def off_the_event_loop(function, *args):
    """Call `function(*args)` in a real thread when serving cooperatively, so other greenlets keep running."""
    if not serving_cooperatively():
        return function(*args)
    import gevent

    return gevent.get_hub().threadpool.apply(function, args)


def deadline(seconds: float) -> AbstractContextManager:
    """A block that raises DeadlinePassed after `seconds` of waiting on the network (no limit outside gevent).

    Only a greenlet that waits can be interrupted; outside gevent the reads it guards come from memory.
    """
    if not serving_cooperatively():
        return nullcontext()
    import gevent

    return gevent.Timeout(seconds, DeadlinePassed)
