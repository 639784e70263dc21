"""Slow clients: 1,000 sockets that drip a request's headers, drip its body, or say nothing, against one service.

For each kind, the sockets are held open (a socket the server closes is opened again, as an attacker would)
while `/health` and an authenticated `GET /chats` are timed on fresh connections. Runs `memlayer serve` as
`make run` starts it, and beside it the same service on gunicorn's gthread workers (the design before
issue 17), so both are measured in one run. Prints a table and writes bench/results/slow-clients-<date>.json.
Usage: python bench/slow_clients.py [--sockets 1000] [--seconds 20] [--drip-every 3]
"""

import argparse
import asyncio
import http.client
import json
import os
import platform
import threading
import time
from datetime import date

from harness import ROOT, Service, fresh_database, percentiles  # bench/ is on sys.path when run as a script

PASSWORD = "bench password 1234"
PROBE_TIMEOUT = 15.0
KINDS = ("header drip", "body drip", "idle")

# What each kind sends first; then one byte every few seconds (header and body drip) or nothing (idle).
OPENINGS = {
    "header drip": b"GET /health HTTP/1.1\r\nHost: x\r\n",
    "body drip": b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{",
    "idle": b"",
}
DRIPS = {"header drip": b"X", "body drip": b" ", "idle": None}


class Siege:
    """`count` sockets of one kind, each reopened when the server closes it; records how long each one lived."""

    def __init__(self, port: int, kind: str, count: int, drip_every: float):
        self.port, self.kind, self.count, self.drip_every = port, kind, count, drip_every
        self.lifetimes: list[float] = []  # seconds from connect to the server's close
        self.open_now = 0
        self.refused = 0

    async def slot(self, stop: asyncio.Event) -> None:
        """Keep one slow socket open until `stop`."""
        while not stop.is_set():
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 10)
            except (OSError, asyncio.TimeoutError):
                self.refused += 1
                await asyncio.sleep(0.5)
                continue
            opened = time.monotonic()
            self.open_now += 1
            try:
                if OPENINGS[self.kind]:
                    writer.write(OPENINGS[self.kind])
                closed = asyncio.ensure_future(reader.read())  # EOF (or an error answer, then EOF) means closed
                halt = asyncio.ensure_future(stop.wait())
                while not closed.done() and not stop.is_set():
                    await asyncio.wait([closed, halt], timeout=self.drip_every, return_when=asyncio.FIRST_COMPLETED)
                    if DRIPS[self.kind] and not closed.done() and not stop.is_set():
                        writer.write(DRIPS[self.kind])
                if closed.done():
                    self.lifetimes.append(time.monotonic() - opened)
                for task in (closed, halt):
                    task.cancel()
            except OSError:
                self.lifetimes.append(time.monotonic() - opened)
            finally:
                self.open_now -= 1
                writer.close()

    async def run(self, seconds: float) -> None:
        """Hold the sockets for `seconds`."""
        stop = asyncio.Event()
        slots = [asyncio.ensure_future(self.slot(stop)) for _ in range(self.count)]
        await asyncio.sleep(seconds)
        stop.set()
        _, stuck = await asyncio.wait(slots, timeout=15)
        for slot in stuck:  # e.g. a connect the server never took
            slot.cancel()
        await asyncio.gather(*slots, return_exceptions=True)


def probe(port: int, path: str, token: str | None) -> float:
    """Milliseconds for one GET on a fresh connection; PROBE_TIMEOUT when it does not answer 200 in time."""
    started = time.perf_counter()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = connection.getresponse()
        response.read()
        connection.close()
        if response.status != 200:
            return PROBE_TIMEOUT * 1000
    except (OSError, http.client.HTTPException):
        return PROBE_TIMEOUT * 1000
    return (time.perf_counter() - started) * 1000


def measure(service: Service, token: str, kind: str, sockets: int, seconds: float, drip_every: float) -> dict:
    """Latency of /health and GET /chats while `sockets` slow sockets of `kind` are held."""
    siege = Siege(service.port, kind, sockets, drip_every)
    runner = threading.Thread(target=asyncio.run, args=(siege.run(seconds),))
    runner.start()
    time.sleep(min(3.0, seconds / 4))  # let the sockets connect and the server's threads fill
    samples: dict[str, list[float]] = {"/health": [], "/chats": []}
    held = []
    deadline = time.monotonic() + seconds - 4
    while time.monotonic() < deadline:
        samples["/health"].append(probe(service.port, "/health", None))
        samples["/chats"].append(probe(service.port, "/chats?limit=20", token))
        held.append(siege.open_now)
        time.sleep(0.05)
    runner.join()
    lifetimes = sorted(siege.lifetimes)
    return {
        "kind": kind, "sockets": sockets,
        "health": percentiles(samples["/health"]) | failures(samples["/health"]),
        "chats": percentiles(samples["/chats"]) | failures(samples["/chats"]),
        "sockets_held_min": min(held) if held else 0,
        "closed_by_server": len(lifetimes),
        "closed_after_max_s": round(lifetimes[-1], 1) if lifetimes else None,
        "refused": siege.refused,
    }


def failures(samples: list[float]) -> dict:
    return {"timeouts": sum(1 for s in samples if s >= PROBE_TIMEOUT * 1000)}


def run(url: str, label: str, env: dict, args) -> list[dict]:
    """One service: each kind of slow socket in turn."""
    service = Service(url, env=env)
    try:
        email = f"slow-clients-{label.split()[0]}@example.com"
        service.request("POST", "/auth/register", {"email": email, "password": PASSWORD})
        status, body = service.request("POST", "/auth/login", {"email": email, "password": PASSWORD})
        if status != 200:
            raise SystemExit(f"login answered {status}: {body}")
        token = body["access_token"]
        for n in range(3):
            service.request("POST", "/chats", {"title": f"chat {n}"}, token=token)
        return [{"server": label} | measure(service, token, kind, args.sockets, args.seconds, args.drip_every)
                for kind in KINDS]
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1000, help="slow sockets of each kind")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="how long each kind is held (longer than the body deadline)")
    parser.add_argument("--drip-every", type=float, default=3.0, help="seconds between the drip's bytes")
    parser.add_argument("--no-baseline", action="store_true", help="skip the gthread service")
    args = parser.parse_args()
    url = fresh_database("memlayer_bench_slow_clients")
    rows = run(url, "memlayer serve", {}, args)
    if not args.no_baseline:
        # GUNICORN_CMD_ARGS overrides gunicorn.conf.py: the same service on gthread workers, 2 x 64 threads.
        gthread = {"GUNICORN_CMD_ARGS": "--worker-class gthread --threads 64"}
        rows += run(url, "gthread 2x64 (baseline)", gthread, args)

    print(f"\n{args.sockets} slow sockets of each kind, held {args.seconds:.0f} s, a byte every {args.drip_every:.0f} s; "
          f"probes on fresh connections, {PROBE_TIMEOUT:.0f} s timeout ({date.today()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs)\n")
    header = ("server", "slow sockets", "/health p50", "p99", "timeouts", "GET /chats p50", "p99", "timeouts",
              "closed by server", "longest lived s", "connects refused")
    print(" | ".join(header))
    for r in rows:
        print(" | ".join(str(v) for v in (
            r["server"], f"{r['sockets']} {r['kind']}", r["health"]["p50_ms"], r["health"]["p99_ms"],
            f"{r['health']['timeouts']}/{r['health']['n']}", r["chats"]["p50_ms"], r["chats"]["p99_ms"],
            f"{r['chats']['timeouts']}/{r['chats']['n']}", r["closed_by_server"], r["closed_after_max_s"],
            r["refused"])))
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"slow-clients-{date.today().isoformat()}.json"
    out.write_text(json.dumps({"date": date.today().isoformat(), "machine": platform.machine(),
                               "cpus": os.cpu_count(), "args": vars(args), "runs": rows}, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
