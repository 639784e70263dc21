"""Prometheus metrics with the official prometheus_client, summed across gunicorn workers (multiprocess mode).

`memlayer serve` gives every process a shared PROMETHEUS_MULTIPROC_DIR; each process writes its values there
and GET /metrics (behind MEMLAYER_METRICS_TOKEN) reads them all. Without that variable (tests, one process)
the values live in this process.
"""

import os
import time

from flask import Flask, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from memlayer.storage.db import get_pool

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter("memlayer_http_requests", "HTTP requests answered, by route template, method and status",
                   ["route", "method", "status"])
REQUEST_SECONDS = Histogram("memlayer_http_request_duration_seconds",
                            "Time to answer a request (to the first byte of a stream), by route template and method",
                            ["route", "method"], buckets=SECONDS)
PROVIDER_SECONDS = Histogram("memlayer_provider_request_duration_seconds",
                             "Model provider calls (to the whole answer, or to a stream's start), by model and purpose",
                             ["model", "purpose"], buckets=SECONDS)
PROVIDER_ERRORS = Counter("memlayer_provider_errors", "Model provider calls that failed, by model, purpose and reason",
                          ["model", "purpose", "reason"])
PROVIDER_TOKENS = Counter("memlayer_provider_tokens", "Tokens the model provider reported (or we estimated)",
                          ["model", "purpose", "kind"])
RECALL_SECONDS = Histogram("memlayer_recall_duration_seconds", "Recall queries, lexical or with a query vector",
                           ["kind"], buckets=SECONDS)
RATE_LIMITED = Counter("memlayer_rate_limited", "Requests refused by a rate limit (429), by endpoint", ["endpoint"])
IDEMPOTENT_REPLAYS = Counter("memlayer_idempotent_replays", "Requests answered by replaying an Idempotency-Key's answer",
                             ["endpoint"])
JOBS_RUN = Counter("memlayer_jobs_run", "Background job attempts, by outcome kind", ["outcome"])
POOL_OBSERVED_EVERY_SECONDS = 1.0  # the pool gauges are refreshed by requests, at most this often per worker
POOL_GAUGES = {
    name: Gauge(f"memlayer_db_pool_{name}", help_text, ["pool"], multiprocess_mode="liveall")
    for name, help_text in (("size", "Connections this worker's pool holds"),
                            ("available", "Idle connections in this worker's pool"),
                            ("waiting", "Requests of this worker waiting for a connection"),
                            ("wait_seconds", "Time this worker's requests spent waiting for a connection, in all"))
}
# Every metric has labels, so a process writes no metrics file until it counts something: `memlayer serve`
# imports this module before it has made the folder.


def collecting_across_processes() -> bool:
    """Whether values are shared through PROMETHEUS_MULTIPROC_DIR (under `memlayer serve`)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


_pool_observed_at = 0.0


def observe_pool(pool) -> None:
    """Copy the pool's statistics into this worker's gauges (at most once a second)."""
    global _pool_observed_at
    now = time.monotonic()
    if now - _pool_observed_at < POOL_OBSERVED_EVERY_SECONDS:
        return
    _pool_observed_at = now
    stats = pool.get_stats()
    POOL_GAUGES["size"].labels("api").set(stats.get("pool_size", 0))
    POOL_GAUGES["available"].labels("api").set(stats.get("pool_available", 0))
    POOL_GAUGES["waiting"].labels("api").set(stats.get("requests_waiting", 0))
    POOL_GAUGES["wait_seconds"].labels("api").set(stats.get("requests_wait_ms", 0) / 1000)


def exposition(extra_families=()) -> tuple[bytes, str]:
    """The text of GET /metrics: every process's values, then `extra_families` (read at scrape time)."""
    if collecting_across_processes():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        text = generate_latest(REGISTRY)
    if extra_families:
        extra = CollectorRegistry()
        extra.register(_Families(extra_families))
        text += generate_latest(extra)
    return text, CONTENT_TYPE_LATEST


def gauge_family(name: str, help_text: str, samples: list[tuple[dict, float]]) -> GaugeMetricFamily:
    """A gauge computed at scrape time (e.g. from the database), with one sample per label set."""
    labels = sorted({key for sample_labels, _ in samples for key in sample_labels})
    family = GaugeMetricFamily(name, help_text, labels=labels)
    for sample_labels, value in samples:
        family.add_metric([sample_labels[key] for key in labels], value)
    return family


class _Families:
    def __init__(self, families):
        self.families = list(families)

    def collect(self):
        return self.families


def init_app(app: Flask) -> None:
    """Time every request and count it by route template (not the raw path), method and status."""

    @app.before_request
    def start_timer():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count_request(response):
        started = g.pop("metrics_started", None)
        if started is not None:
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            REQUEST_SECONDS.labels(route, request.method).observe(time.perf_counter() - started)
            REQUESTS.labels(route, request.method, str(response.status_code)).inc()
            observe_pool(get_pool())
        return response
