"""Memory extraction's cost: sends per second with it off and on, the delay until a memory shows, jobs per second.

Runs `memlayer serve` (gunicorn and its job worker, as `make run` starts them) against the tests' fake Chat
Completions server answering every call in 50 ms: replies as text, extraction calls (those asking for the
memory_operations structure) with one fact per message. Prints a table and writes
bench/results/extraction-<date>.json. Usage: python bench/extraction.py [--seconds 20] [--clients 16]
"""

import argparse
import http.client
import json
import os
import platform
import sys
import threading
import time
import uuid
from datetime import date

import psycopg

from harness import (  # bench/ is on sys.path when run as a script
    ROOT,
    Service,
    fresh_database,
    percentiles,
    run_threads_for,
)

sys.path.insert(0, str(ROOT / "tests"))  # the fake model is the one the tests use
from fake_provider import FakeProvider, Reply  # noqa: E402

MODEL_SECONDS = 0.05
PASSWORD = "bench password 1234"


class Model:
    """The fake model: a reply for a chat, one fact about the new message for an extraction."""

    def __call__(self, handler, body):
        if "response_format" not in body:
            return Reply("Noted, thank you.", delay=MODEL_SECONDS)(handler, body)
        said = body["messages"][-1]["content"].rsplit("\n", 1)[-1]
        fact = {"op": "add", "id": None, "content": f"User said: {said[:80]}"}
        return Reply(json.dumps({"operations": [fact]}), delay=MODEL_SECONDS)(handler, body)


class Client:
    """One keep-alive connection with a user's token."""

    def __init__(self, port: int, token: str | None = None):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.token = token

    def request(self, method: str, path: str, body: dict | None = None):
        """(status, parsed body); a keep-alive connection the server closed while idle is opened again once."""
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in (1, 2):
            try:
                self.connection.request(method, path, body=json.dumps(body) if body is not None else None,
                                        headers=headers)
                response = self.connection.getresponse()
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                self.connection.close()
                if attempt == 2:
                    raise


def sign_up(port: int, email: str) -> tuple[Client, str]:
    """A user with a chat: their client and the chat's id."""
    anonymous = Client(port)
    anonymous.request("POST", "/auth/register", {"email": email, "password": PASSWORD})
    token = anonymous.request("POST", "/auth/login", {"email": email, "password": PASSWORD})[1]["access_token"]
    client = Client(port, token)
    return client, client.request("POST", "/chats", {"title": "bench"})[1]["id"]


def sends_per_second(port: int, label: str, clients: int, seconds: float) -> dict:
    """`clients` users sending in a loop for `seconds`: sends per second and latency."""
    users = [sign_up(port, f"{label}-{n}-{uuid.uuid4().hex[:6]}@example.com") for n in range(clients)]
    latencies, errors = [], []

    def sender(stop: threading.Event, client: Client, chat_id: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            started = time.perf_counter()
            status, _ = client.request("POST", f"/chats/{chat_id}/messages",
                                       {"content": f"My note number {n} is about {uuid.uuid4().hex[:8]}."})
            (latencies if status == 201 else errors).append((time.perf_counter() - started) * 1000)

    elapsed = run_threads_for(seconds, sender, users)
    return {"sends": len(latencies), "errors": len(errors), "per_second": round(len(latencies) / elapsed, 1),
            "latency": percentiles(latencies)}


def time_to_memory(port: int, samples: int) -> dict:
    """Send, then poll GET /memories until the memory learned from that message shows: ms from the 201."""
    client, chat_id = sign_up(port, f"visible-{uuid.uuid4().hex[:6]}@example.com")
    delays = []
    for n in range(samples):
        marker = f"marker{n}x{uuid.uuid4().hex[:6]}"
        status, _ = client.request("POST", f"/chats/{chat_id}/messages", {"content": f"Remember {marker} please."})
        answered = time.perf_counter()
        assert status == 201, status
        deadline = answered + 30
        while time.perf_counter() < deadline:
            _, memories = client.request("GET", "/memories?limit=5")
            if any(marker in memory["content"] for memory in memories):
                delays.append((time.perf_counter() - answered) * 1000)
                break
            time.sleep(0.01)
    return percentiles(delays) | {"not_seen": samples - len(delays)}


def job_throughput(url: str) -> dict:
    """Jobs finished per second over the loaded run (from the queue's own timestamps), and what is left."""
    with psycopg.connect(url) as conn:
        done, first, last = conn.execute(
            "SELECT count(*), min(finished_at), max(finished_at) FROM memory_jobs WHERE state = 'done'").fetchone()
        states = dict(conn.execute("SELECT state, count(*) FROM memory_jobs GROUP BY state").fetchall())
    span = (last - first).total_seconds() if done > 1 else None
    return {"done": done, "per_second": round(done / span, 1) if span else None, "states": states}


def run(url: str, extraction: str, args) -> dict:
    """One service with MEMLAYER_MEMORY_EXTRACTION=`extraction`."""
    model = FakeProvider()
    model.default = Model()
    model.start()
    service = Service(url, env={"MEMLAYER_LLM_BASE_URL": model.url, "MEMLAYER_LLM_MODEL": "bench-model",
                                "MEMLAYER_MEMORY_EXTRACTION": extraction, "MEMLAYER_JOB_POLL_SECONDS": "0.05",
                                "MEMLAYER_RATELIMIT_ENABLED": "false",
                                # Sign-ups are not what is measured here: a cheap hash keeps them quick.
                                "MEMLAYER_PASSWORD_HASH_METHOD": "scrypt:1024:8:1"})
    try:
        sends = sends_per_second(service.port, f"sends-{extraction}", args.clients, args.seconds)
        result = {"extraction": extraction, "sends": sends}
        if extraction == "auto":
            drained_by = time.monotonic() + 120
            while time.monotonic() < drained_by and job_throughput(url)["states"].get("queued", 0):
                time.sleep(0.5)
            result["jobs"] = job_throughput(url)
            result["time_to_memory_ms"] = time_to_memory(service.port, args.samples)
    finally:
        service.stop()
        model.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the clients send")
    parser.add_argument("--clients", type=int, default=16, help="users sending at once")
    parser.add_argument("--samples", type=int, default=50, help="sends timed until their memory shows")
    args = parser.parse_args()
    off = run(fresh_database("memlayer_bench_extraction_off"), "off", args)
    url = fresh_database("memlayer_bench_extraction")
    on = run(url, "auto", args)

    ratio = on["sends"]["per_second"] / off["sends"]["per_second"]
    print(f"\nMemory extraction, fake model answering in {MODEL_SECONDS * 1000:.0f} ms, {args.clients} clients sending "
          f"for {args.seconds:.0f} s; `memlayer serve` with 2 gunicorn workers and one job worker (4 threads) "
          f"({date.today()}, {platform.machine()}, {os.cpu_count()} CPUs)\n")
    print("extraction | sends/s | send p50 ms | send p99 ms | errors")
    for r in (off, on):
        s, latency = r["sends"], r["sends"]["latency"]
        print(f"{r['extraction']} | {s['per_second']} | {latency['p50_ms']} | {latency['p99_ms']} | {s['errors']}")
    print(f"\nsends/s with extraction on / off: {ratio:.2f}")
    jobs, seen = on["jobs"], on["time_to_memory_ms"]
    print(f"jobs done: {jobs['done']}, {jobs['per_second']} per second for the one worker; states {jobs['states']}")
    never = f", {seen['not_seen']} never seen" if seen["not_seen"] else ""
    print(f"201 to memory visible (n={seen['n']}, unloaded): p50 {seen['p50_ms']} ms, p99 {seen['p99_ms']} ms{never}")
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"extraction-{date.today().isoformat()}.json"
    out.write_text(json.dumps({"date": date.today().isoformat(), "machine": platform.machine(), "cpus": os.cpu_count(),
                               "model_seconds": MODEL_SECONDS, "args": vars(args), "off": off, "on": on,
                               "ratio_on_off": round(ratio, 3)}, indent=2, default=str) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
