"""What the benchmarks share: the database they run on, `memlayer serve` on a free port, percentiles."""

import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql as pgsql

from memlayer.storage.embedded import ensure_database, start_embedded
from memlayer.storage.migrate import apply_migrations

ROOT = Path(__file__).resolve().parent.parent
OPERATOR_TOKEN = "bench-operator-token"  # MEMLAYER_METRICS_TOKEN of the services the benchmarks start


def bench_database_url(name: str) -> str:
    """URL of database `name`: on MEMLAYER_DATABASE_URL's server when set, else on the benchmarks' embedded one."""
    given = os.environ.get("MEMLAYER_DATABASE_URL")
    if given:
        ensure_database(given, name)
        return urlunsplit(urlsplit(given)._replace(path=f"/{name}"))
    return start_embedded(str(ROOT / ".memlayer" / "bench"), database=name)


def fresh_database(name: str, *, migrate: bool = True) -> str:
    """URL of database `name`, dropped if an earlier run left it, created and migrated: every run starts empty.

    migrate=False leaves it without tables, for a service that migrates it itself (another version's serve).
    """
    given = os.environ.get("MEMLAYER_DATABASE_URL")
    admin = given or start_embedded(str(ROOT / ".memlayer" / "bench"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))
        conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    url = urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))
    if migrate:
        apply_migrations(url)
    return url


def percentiles(samples_ms: list[float]) -> dict:
    """p50 and p99 (ms) and the sample count."""
    ordered = sorted(samples_ms)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
    }


class Service:
    """`memlayer serve` on a free port for the length of the run (this checkout's, or another tree's)."""

    def __init__(self, database_url: str, env: dict | None = None, *, workers: int | None = 2,
                 log_path: Path | None = None, tree: Path = ROOT):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = {**os.environ, "MEMLAYER_DATABASE_URL": database_url, "MEMLAYER_BIND": f"127.0.0.1:{self.port}",
               "MEMLAYER_LOG_LEVEL": "WARNING", "MEMLAYER_METRICS_TOKEN": OPERATOR_TOKEN, **(env or {})}
        if tree != ROOT:
            env["PYTHONPATH"] = str(tree)
        command = [sys.executable, "-m", "memlayer", "serve"] + (["--workers", str(workers)] if workers else [])
        self.log = open(log_path, "ab") if log_path else None
        self.process = subprocess.Popen(command, env=env, cwd=tree, stdout=self.log, stderr=subprocess.STDOUT if self.log else None)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("the service did not start")

    def request(self, method: str, path: str, body: dict | None = None, token: str | None = None):
        """One request on the run's keep-alive connection (reopened after an error); returns (status, parsed body).

        A kept-alive connection the server closed while it was idle (5 s) is opened again once: the request
        never reached the service.
        """
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        for attempt in (1, 2):
            reused = hasattr(self, "connection")
            if not reused:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.connection.request(method, path, body=json.dumps(body) if body is not None else None,
                                        headers=headers)
                response = self.connection.getresponse()
                raw = response.read()
                self.last_headers = dict(response.getheaders())
                return response.status, json.loads(raw) if raw else None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                del self.connection
                if not reused or attempt == 2:
                    raise
            except (http.client.HTTPException, OSError):
                del self.connection
                raise

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
        if self.log:
            self.log.close()


def run_threads_for(seconds: float, target, argument_lists: list[tuple]) -> float:
    """target(stop, *arguments) in one thread per argument tuple, told to stop after `seconds`; wall seconds taken."""
    stop = threading.Event()
    threads = [threading.Thread(target=target, args=(stop, *arguments)) for arguments in argument_lists]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return time.monotonic() - started


def ensure_program(name: str) -> str:
    """Path of a program (wrk, valgrind), installed from Debian's package of that name when missing."""
    found = shutil.which(name)
    if found:
        return found
    print(f"installing {name} from Debian's packages", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", name]):
        subprocess.run(sudo + command, check=True, env=env, stdout=subprocess.DEVNULL)
    return shutil.which(name) or sys.exit(f"{name} could not be installed")


WRK_SCRIPT = ROOT / "bench" / "wrk" / "requests.lua"


def wrk(port: int, targets: list[tuple[str, str, str | None, str | None]], *, seconds: float, connections: int,
        threads: int = 2) -> dict:
    """Drive the service with wrk over (method, path, token, body) targets, round-robin; rate, latencies, errors."""
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as listing:
        for method, path, token, body in targets:
            listing.write("\t".join((method, path, token or "-", body or "-")) + "\n")
    try:
        done = subprocess.run(
            [ensure_program("wrk"), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
             "-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}", "--", listing.name, str(threads)],
            capture_output=True, text=True, check=True,
        )
    finally:
        os.unlink(listing.name)
    line = next(line for line in done.stdout.splitlines() if line.startswith("WRK_RESULT "))
    raw = json.loads(line.removeprefix("WRK_RESULT "))
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return {
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p90_ms": round(raw["p90_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "errors": errors,
        "requests": raw["requests"],
    }


def gunicorn_workers(service: "Service") -> list:
    """The gunicorn worker processes under a `memlayer serve` (as psutil processes)."""
    import psutil

    processes = psutil.Process(service.process.pid).children(recursive=True)
    pids = {p.pid for p in processes}
    masters = [p for p in processes if any(c.pid in pids for c in p.children())]
    return [c for master in masters for c in master.children()]


def rss_mb(process) -> dict:
    """A process's resident memory now and at its peak (VmHWM), in MB."""
    status = Path(f"/proc/{process.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    kb = lambda name: int(fields[name].split()[0])  # noqa: E731
    return {"pid": process.pid, "rss_mb": round(kb("VmRSS") / 1024, 1), "peak_rss_mb": round(kb("VmHWM") / 1024, 1)}



def cpu_seconds(processes) -> float:
    """User + system CPU seconds the processes used so far (0 for one that has exited)."""
    import psutil

    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def postgres_cpu_seconds() -> float:
    """CPU seconds of every PostgreSQL server on this machine, including backends that already exited."""
    import psutil

    total = 0.0
    for process in psutil.process_iter(["name"]):
        try:
            if process.info["name"] != "postgres" or process.parent().name() == "postgres":
                continue
            times = process.cpu_times()  # the postmaster: its own time and its reaped children's
            total += times.user + times.system + times.children_user + times.children_system
            total += cpu_seconds(process.children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    return total


def steal_seconds() -> float:
    """CPU time the hypervisor gave to others (/proc/stat 'steal'), summed over CPUs."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0
