"""Export of a big account: worker memory while GET /auth/me/export streams 200,000 messages, beside a small one.

Seeds a user with --messages messages (COPY, straight into the database) and one with 100, starts
`memlayer serve` with one worker, downloads each export while sampling the worker's RSS every 50 ms, and
prints the document sizes, the time taken and the worker's RSS before and at its peak. Writes
bench/results/export-<date>.json. Usage: python bench/export.py [--messages 200000]
"""

import argparse
import http.client
import json
import os
import platform
import threading
import time
from datetime import date

import psycopg

from harness import ROOT, Service, fresh_database, gunicorn_workers  # bench/ is on sys.path when run as a script

PASSWORD = "bench password 1234"


def seed_messages(url: str, email: str, count: int) -> None:
    """`count` messages (half the user's, half replies) in one chat of the user with this email."""
    with psycopg.connect(url) as conn:
        user_id = conn.execute("SELECT id FROM users WHERE email = %s", [email]).fetchone()[0]
        chat_id = conn.execute("INSERT INTO chats (user_id, title) VALUES (%s, 'long') RETURNING id",
                               [user_id]).fetchone()[0]
        with conn.cursor().copy("COPY messages (user_id, chat_id, role, content) FROM STDIN") as copy:
            for n in range(count):
                role = "user" if n % 2 == 0 else "assistant"
                text = f"Message {n}: I went hiking near the lake with my sister on a sunny day."
                copy.write_row((user_id, chat_id, role, text))


def download(service: Service, token: str) -> tuple[int, float]:
    """Bytes of the export and seconds it took, read in 64 kB pieces and thrown away."""
    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=600)
    started = time.perf_counter()
    connection.request("GET", "/auth/me/export", headers={"Authorization": f"Bearer {token}"})
    response = connection.getresponse()
    assert response.status == 200, response.status
    size = 0
    while piece := response.read(65536):
        size += len(piece)
    return size, time.perf_counter() - started


def measured(service: Service, token: str) -> dict:
    """One export's size and time, with the worker's RSS before and at its peak meanwhile."""
    worker = gunicorn_workers(service)[0]
    before = worker.memory_info().rss
    peak, stop = [before], threading.Event()

    def sample():
        while not stop.is_set():
            peak.append(worker.memory_info().rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    size, seconds = download(service, token)
    stop.set()
    sampler.join()
    return {"bytes": size, "seconds": round(seconds, 2), "rss_before_mb": round(before / 2**20, 1),
            "rss_peak_mb": round(max(peak) / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000, help="messages of the big account")
    args = parser.parse_args()
    url = fresh_database("memlayer_bench_export")
    service = Service(url, env={"MEMLAYER_RATELIMIT_ENABLED": "false",
                                "MEMLAYER_PASSWORD_HASH_METHOD": "scrypt:1024:8:1"}, workers=1)
    try:
        tokens = {}
        for name, count in (("small", 100), ("big", args.messages)):
            email = f"export-{name}@example.com"
            tokens[name] = service.request("POST", "/auth/register", {"email": email, "password": PASSWORD})[1]["access_token"]
            seed_messages(url, email, count)
        rows = {name: measured(service, tokens[name]) for name in ("small", "big")}
    finally:
        service.stop()
    print(f"\nGET /auth/me/export, one gunicorn worker ({date.today()}, {platform.machine()}, {os.cpu_count()} CPUs)\n")
    print("account | document | seconds | worker RSS before | worker RSS peak")
    for name, count in (("small", 100), ("big", args.messages)):
        r = rows[name]
        print(f"{count:,} messages | {r['bytes'] / 2**20:.1f} MB | {r['seconds']} | {r['rss_before_mb']} MB | {r['rss_peak_mb']} MB")
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"export-{date.today().isoformat()}.json"
    out.write_text(json.dumps({"date": date.today().isoformat(), "machine": platform.machine(), "cpus": os.cpu_count(),
                               "messages": args.messages, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
