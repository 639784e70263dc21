"""Slow model: 64 sends wait on a model that takes 2 s while GET /chats is timed and the pool watched.

Runs `memlayer serve` against the tests' fake Chat Completions server as `make run` starts it (gevent workers),
and beside it on gunicorn's gthread workers with 64 and with 4 threads (the design before issue 17, and what
too few threads cost). Prints a table and writes bench/results/slow-model-<date>.json.
Usage: python bench/slow_model.py [--seconds 15] [--no-baseline]
"""

import argparse
import http.client
import json
import os
import platform
import sys
import threading
import time
from datetime import date

from harness import (  # bench/ is on sys.path when run as a script
    OPERATOR_TOKEN,
    ROOT,
    Service,
    fresh_database,
    gunicorn_workers,
    percentiles,
)

sys.path.insert(0, str(ROOT / "tests"))  # the fake model is the one the tests use
from fake_provider import FakeProvider, Reply  # noqa: E402

SENDERS = 64
MODEL_SECONDS = 2.0
PASSWORD = "bench password 1234"


class Client:
    """One keep-alive HTTP connection to the service."""

    def __init__(self, port: int, token: str | None = None):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.token = token

    def request(self, method: str, path: str, body: dict | None = None,
                token: str | None = None) -> tuple[int, dict | list | None]:
        """One request with the client's token (or `token`); (status, parsed body)."""
        headers = {"Content-Type": "application/json"}
        if token or self.token:
            headers["Authorization"] = f"Bearer {token or self.token}"
        self.connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = self.connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None


def worker_rss_mb(service: Service) -> list[float]:
    """Resident memory of each gunicorn worker (the master's children)."""
    return [round(w.memory_info().rss / 2**20, 1) for w in gunicorn_workers(service)]


# (label, extra gunicorn arguments, requests served at once per worker): GUNICORN_CMD_ARGS overrides
# gunicorn.conf.py, so the baselines are the same service on the worker class it replaced.
SERVERS = (
    ("gevent (memlayer serve)", "", 4000),
    ("gthread 64 threads", "--worker-class gthread --threads 64", 64),
    ("gthread 4 threads", "--worker-class gthread --threads 4", 4),
)


def run(url: str, label: str, gunicorn_args: str, concurrency: int, seconds: float) -> dict:
    """One service: idle and loaded GET /chats latency, pool waits, sends, RSS."""
    model = FakeProvider()
    model.default = Reply("A considered answer, after some thought.", delay=MODEL_SECONDS)
    model.start()
    service = Service(url, env={"MEMLAYER_LLM_BASE_URL": model.url, "MEMLAYER_LLM_MODEL": "slow-model",
                                "GUNICORN_CMD_ARGS": gunicorn_args})
    try:
        email = f"slow-{label.split()[0]}-{concurrency}@example.com"
        anonymous = Client(service.port)
        anonymous.request("POST", "/auth/register", {"email": email, "password": PASSWORD})
        token = anonymous.request("POST", "/auth/login", {"email": email, "password": PASSWORD})[1]["access_token"]
        reader = Client(service.port, token)
        chats = [reader.request("POST", "/chats", {"title": f"chat {n}"})[1]["id"] for n in range(SENDERS)]

        def time_gets(count: int) -> list[float]:
            samples = []
            for _ in range(count):
                started = time.perf_counter()
                status, _ = reader.request("GET", "/chats?limit=20")
                samples.append((time.perf_counter() - started) * 1000)
                assert status == 200, status
            return samples

        time_gets(20)
        idle = percentiles(time_gets(200))

        stop, sends, errors = threading.Event(), [], []

        def sender(chat_id: str) -> None:
            client = Client(service.port, token)
            while not stop.is_set():
                started = time.perf_counter()
                status, _ = client.request("POST", f"/chats/{chat_id}/messages", {"content": "think about this"})
                (sends if status == 201 else errors).append((time.perf_counter() - started) * 1000)

        senders = [threading.Thread(target=sender, args=(chat_id,)) for chat_id in chats]
        for thread in senders:
            thread.start()
        model.wait_for(lambda: model.in_flight >= min(SENDERS, 2 * concurrency), timeout=10)
        loaded, waiting, deadline = [], [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            loaded += time_gets(1)
            # requests_waiting is a gauge of the worker that answers: sampled between the GETs.
            waiting.append(reader.request("GET", "/health/db-pool", token=OPERATOR_TOKEN)[1].get("requests_waiting", 0))
        in_flight_while_measuring = model.peak_in_flight
        stop.set()
        for thread in senders:
            thread.join()
        rss = worker_rss_mb(service)
    finally:
        service.stop()
        model.stop()
    return {
        "server": label, "gunicorn_args": gunicorn_args, "workers": 2, "model_seconds": MODEL_SECONDS,
        "model_calls_in_flight_peak": in_flight_while_measuring,
        "sends_completed": len(sends), "send_errors": len(errors),
        "send_latency": percentiles(sends) if sends else None,
        "get_chats_idle": idle, "get_chats_loaded": percentiles(loaded) | p90(loaded),
        "pool_requests_waiting_max": max(waiting), "pool_samples_with_waiting": sum(1 for w in waiting if w),
        "pool_samples": len(waiting), "worker_rss_mb": rss,
    }


def p90(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"p90_ms": round(ordered[int(len(ordered) * 0.9)], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="how long GET /chats is timed under load")
    parser.add_argument("--no-baseline", action="store_true", help="only the service as `make run` starts it")
    args = parser.parse_args()
    url = fresh_database("memlayer_bench_slow")
    runs = [run(url, *server, args.seconds) for server in (SERVERS[:1] if args.no_baseline else SERVERS)]

    print(f"\n{SENDERS} clients sending in a loop to a model that answers in {MODEL_SECONDS:.0f} s; "
          f"GET /chats timed meanwhile (2 gunicorn workers; {date.today()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs)\n")
    header = ("server", "model calls in flight", "sends done", "send errors", "send p50 ms",
              "GET /chats idle p50", "loaded p50", "loaded p90", "loaded p99", "requests_waiting max (samples > 0)", "worker RSS MB")
    print(" | ".join(header))
    for r in runs:
        loaded = r["get_chats_loaded"]
        print(" | ".join(str(v) for v in (
            r["server"], r["model_calls_in_flight_peak"], r["sends_completed"], r["send_errors"],
            r["send_latency"]["p50_ms"] if r["send_latency"] else "-", r["get_chats_idle"]["p50_ms"],
            loaded["p50_ms"], loaded["p90_ms"], loaded["p99_ms"],
            f"{r['pool_requests_waiting_max']} ({r['pool_samples_with_waiting']} of {r['pool_samples']})",
            ", ".join(map(str, r["worker_rss_mb"])))))
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"slow-model-{date.today().isoformat()}.json"
    out.write_text(json.dumps({"date": date.today().isoformat(), "cpus": os.cpu_count(), "senders": SENDERS,
                               "runs": runs}, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
