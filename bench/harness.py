"""What the benchmarks share: the database they run on, `memlayer serve` on a free port, percentiles."""

import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from memlayer.embedded import ensure_database, start_embedded

ROOT = Path(__file__).resolve().parent.parent


def bench_database_url(name: str) -> str:
    """URL of database `name`: on MEMLAYER_DATABASE_URL's server when set, else on the benchmarks' embedded one."""
    given = os.environ.get("MEMLAYER_DATABASE_URL")
    if given:
        ensure_database(given, name)
        return urlunsplit(urlsplit(given)._replace(path=f"/{name}"))
    return start_embedded(str(ROOT / ".memlayer" / "bench"), database=name)


def percentiles(samples_ms: list[float]) -> dict:
    """p50 and p99 (ms) and the sample count."""
    ordered = sorted(samples_ms)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
    }


class Service:
    """`memlayer serve` on a free port for the length of the run."""

    def __init__(self, database_url: str, env: dict | None = None):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = {**os.environ, "MEMLAYER_DATABASE_URL": database_url, "MEMLAYER_BIND": f"127.0.0.1:{self.port}",
               "MEMLAYER_LOG_LEVEL": "WARNING", **(env or {})}
        self.process = subprocess.Popen([sys.executable, "-m", "memlayer", "serve", "--workers", "2"], env=env, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("the service did not start")

    def request(self, method: str, path: str, body: dict | None = None, token: str | None = None):
        """One request on the run's keep-alive connection (reopened after an error); returns (status, parsed body)."""
        if not hasattr(self, "connection"):
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            self.connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            response = self.connection.getresponse()
            raw = response.read()
        except (http.client.HTTPException, OSError):
            del self.connection
            raise
        return response.status, json.loads(raw) if raw else None

    def timed(self, paths: list[str], token: str) -> dict:
        """p50/p99 of GETs of each path in turn (after a warm-up), failing on any non-200."""
        for path in paths[:20]:
            self.request("GET", path, token=token)
        samples = []
        for path in paths:
            started = time.perf_counter()
            status, body = self.request("GET", path, token=token)
            samples.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise SystemExit(f"GET {path} answered {status}: {body}")
        return percentiles(samples)

    def stop(self) -> None:
        """Stop the service (and gunicorn under it)."""
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)
