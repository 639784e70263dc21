"""Logins: what a password check costs with scrypt (N=2^15, r=8, p=3, the old default) and Argon2id (the new one).

In one run: CPU seconds per check in this process for each method, then logins per second through
`memlayer serve` (2 workers, 16 clients logging in for --seconds) with each method configured.
Prints a table and writes bench/results/logins-<date>.json. Usage: python bench/logins.py [--seconds 15]
"""

import argparse
import http.client
import json
import os
import platform
import threading
import time
from datetime import date

from harness import (  # bench/ is on sys.path
    ROOT,
    Service,
    cpu_seconds,
    fresh_database,
    gunicorn_workers,
    percentiles,
    run_threads_for,
)
from memlayer.auth.passwords import check_hash, make_hash

METHODS = {"scrypt N=2^15 r=8 p=3 (before)": "scrypt:32768:8:3", "Argon2id m=19 MiB t=2 p=1 (now)": "argon2id"}
PASSWORD = "bench password 1234"
CLIENTS = 16


def cpu_per_check(method: str, checks: int = 10) -> float:
    """CPU seconds of one password check with `method`, in this process."""
    stored = make_hash(PASSWORD, method)
    started = time.process_time()
    for _ in range(checks):
        assert check_hash(stored, PASSWORD)
    return (time.process_time() - started) / checks


def logins_per_second(method: str, seconds: float) -> dict:
    """16 clients logging in for `seconds` against `memlayer serve` hashing with `method`."""
    service = Service(fresh_database("memlayer_bench_logins"),
                      env={"MEMLAYER_PASSWORD_HASH_METHOD": method, "MEMLAYER_RATELIMIT_ENABLED": "false"})
    try:
        emails = [f"login-{n}@example.com" for n in range(CLIENTS)]
        for email in emails:
            service.request("POST", "/auth/register", {"email": email, "password": PASSWORD})
        workers = gunicorn_workers(service)
        cpu_before = cpu_seconds(workers)
        latencies, failures = [], []

        def client(stop: threading.Event, email: str) -> None:
            body = json.dumps({"email": email, "password": PASSWORD})
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
                    connection.request("POST", "/auth/login", body=body, headers={"Content-Type": "application/json"})
                    status = connection.getresponse().status
                    connection.close()
                except OSError:
                    status = 0
                (latencies if status == 200 else failures).append((time.perf_counter() - started) * 1000)

        elapsed = run_threads_for(seconds, client, [(email,) for email in emails])
        cpu = cpu_seconds(workers) - cpu_before
    finally:
        service.stop()
    return {"logins": len(latencies), "failures": len(failures), "per_second": round(len(latencies) / elapsed, 2),
            "worker_cpu_ms_per_login": round(cpu * 1000 / max(1, len(latencies)), 1),
            "latency": percentiles(latencies) if latencies else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="how long the clients log in, per method")
    args = parser.parse_args()
    rows = []
    for label, method in METHODS.items():
        rows.append({"method": label, "setting": method, "cpu_ms_per_check": round(cpu_per_check(method) * 1000, 1),
                     "service": logins_per_second(method, args.seconds)})
    print(f"\nLogins, {CLIENTS} clients for {args.seconds:.0f} s against `memlayer serve` (2 workers) "
          f"({date.today()}, {platform.machine()}, {os.cpu_count()} CPUs)\n")
    print("method | CPU per check (in-process) | logins/s | worker CPU per login | p50 | p99 | failures")
    for r in rows:
        s = r["service"]
        latency = s["latency"] or {"p50_ms": "-", "p99_ms": "-"}
        print(f"{r['method']} | {r['cpu_ms_per_check']} ms | {s['per_second']} | {s['worker_cpu_ms_per_login']} ms | "
              f"{latency['p50_ms']} ms | {latency['p99_ms']} ms | {s['failures']}")
    before, now = rows[0], rows[1]
    print(f"\nArgon2id / scrypt: CPU per check {now['cpu_ms_per_check'] / before['cpu_ms_per_check']:.2f}, "
          f"logins per second {now['service']['per_second'] / max(0.01, before['service']['per_second']):.1f}x")
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"logins-{date.today().isoformat()}.json"
    out.write_text(json.dumps({"date": date.today().isoformat(), "machine": platform.machine(), "cpus": os.cpu_count(),
                               "clients": CLIENTS, "seconds": args.seconds, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
