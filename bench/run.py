"""`make bench`: MemLayer measured the way an operator would, against the ceiling of its own SQL.

On a fresh database (embedded unless MEMLAYER_DATABASE_URL is set) it seeds bench/seed.py's data, starts
`memlayer serve` with the production settings (`make run`'s gunicorn, MEMLAYER_ENV=production, INFO access
logs to a file) and drives it from wrk in a separate process. pgbench runs the send path's SQL in the same
run (bench/ceiling.py). Prints one table, writes bench/results/<date>.json.

Usage: python bench/run.py [--seconds 15] [--connections 16] [--only send pages ...]
"""

import argparse
import json
import os
import platform
import random
import secrets
import subprocess
import sys
import threading
import time
import uuid
from datetime import date
from pathlib import Path
from urllib.parse import quote

import psycopg
from flask_jwt_extended import decode_token

import ceiling  # bench/ is on sys.path when run as a script
import slow_model
from harness import (
    ROOT,
    Service,
    cpu_seconds,
    fresh_database,
    gunicorn_workers,
    postgres_cpu_seconds,
    rss_mb,
    steal_seconds,
    wrk,
)
from memlayer import config as settings
from memlayer.app import create_app
from memlayer.auth.tokens import issue_tokens
from memlayer.storage.db import close_pool
from memlayer.storage.embedded import embedded_program
from memlayer.web.pagination import encode_cursor
from memory_data import TextMaker
from seed import PASSWORD, Seeded, locomo_questions, seed

DATABASE = "memlayer_bench_run"
SCENARIOS = ("send", "pages", "chats", "memories", "mix", "slow-model", "login")
# Login limits would answer most of a login burst with 429s; the burst measures scrypt, not the limiter.
LOGIN_LIMIT_OVERRIDE = "1000000 per minute"


class Meter:
    """CPU used while a load runs: by the service's workers, by PostgreSQL, and stolen by the hypervisor."""

    def __init__(self, workers: list):
        self.workers = workers

    def __enter__(self) -> "Meter":
        self.start = (cpu_seconds(self.workers), postgres_cpu_seconds(), steal_seconds(), time.monotonic())
        return self

    def __exit__(self, *exc) -> None:
        self.end = (cpu_seconds(self.workers), postgres_cpu_seconds(), steal_seconds(), time.monotonic())

    def per_request(self, requests: int) -> dict:
        """CPU ms per request in the service and in PostgreSQL (steal-proof, unlike req/s), and the steal share."""
        service, postgres, steal, wall = (b - a for a, b in zip(self.start, self.end))
        return {
            "service_cpu_ms": round(service * 1000 / max(requests, 1), 2) if self.workers else None,
            "postgres_cpu_ms": round(postgres * 1000 / max(requests, 1), 2),
            "steal_pct": round(100 * steal / (wall * (os.cpu_count() or 1)), 1),
        }


class Bench:
    """One run: the seeded database, the service, tokens, and the results gathered so far."""

    def __init__(self, url: str, seeded: Seeded, seconds: float, connections: int):
        self.url, self.seeded, self.seconds, self.connections = url, seeded, seconds, connections
        self.secret = secrets.token_urlsafe(48)
        self.app = create_app({"DATABASE_URL": url, "JWT_SECRET_KEY": self.secret, "RATELIMIT_ENABLED": False})
        self.config = self.app.config  # the settings the service runs with (same environment)
        self.results: dict[str, dict] = {}
        self.log_path = ROOT / ".memlayer" / "bench" / "service.log"
        self.service = Service(url, {
            "MEMLAYER_ENV": "production", "MEMLAYER_JWT_SECRET_KEY": self.secret, "MEMLAYER_LOG_LEVEL": "INFO",
            "MEMLAYER_RATELIMIT_LOGIN_PER_ADDRESS": LOGIN_LIMIT_OVERRIDE,
        }, workers=None, log_path=self.log_path)

    def token(self, user_id: uuid.UUID) -> str:
        """A fresh access token for a user, signed with the service's secret."""
        with self.app.app_context():
            return issue_tokens(user_id, fresh=True)["access_token"]

    def load(self, name: str, targets: list, *, connections: int | None = None, seconds: float | None = None,
             warmup: float = 2.0) -> dict:
        """wrk over the targets after a short warm-up (pool connections open, statements prepared); recorded."""
        connections = connections or self.connections
        if warmup:
            wrk(self.service.port, targets, seconds=warmup, connections=connections)
        with Meter(gunicorn_workers(self.service)) as meter:
            result = wrk(self.service.port, targets, seconds=seconds or self.seconds, connections=connections)
        result |= meter.per_request(result["requests"])
        self.results[name] = result | {"connections": connections}
        print(f"  {name}: {result}", flush=True)
        return result

    def stop(self) -> None:
        self.service.stop()
        close_pool(self.app)


def send_targets(bench: Bench) -> list:
    """Each send user posts a random number to their own chat (random, so no run's history grows its recall)."""
    return [("POST", f"/chats/{chat_id}/messages", bench.token(user_id), '{"content": "{n}"}')
            for user_id, chat_id in bench.seeded.send_users]


def scenario_send(bench: Bench) -> None:
    """Sends at 16 connections, then pgbench on the same SQL with as many clients."""
    bench.load("send", send_targets(bench))
    clients = []
    with psycopg.connect(bench.url) as conn:
        sample = conn.execute(
            "SELECT content, prompt_tokens, completion_tokens, cost FROM messages"
            " WHERE role = 'assistant' AND model IS NOT NULL ORDER BY seq DESC LIMIT 1").fetchone()
        for client, (user_id, chat_id) in enumerate(bench.seeded.send_users[:bench.connections]):
            window_start_seq = conn.execute(
                "SELECT min(seq) FROM (SELECT seq FROM messages WHERE chat_id = %s ORDER BY seq DESC LIMIT %s) m",
                [chat_id, bench.config["RECENT_MESSAGES"]]).fetchone()[0]
            with bench.app.app_context():
                jti = decode_token(bench.token(user_id))["jti"]
            clients.append({
                "client": client, "user_id": user_id, "chat_id": chat_id, "jti": jti,
                "model": settings.default_model(bench.config), "period": date.today().replace(day=1),
                "recent_limit": bench.config["RECENT_MESSAGES"], "recall_k": bench.config["RECALL_K"],
                "window_start_seq": window_start_seq, "reply": sample[0], "prompt_tokens": sample[1],
                "completion_tokens": sample[2], "cost": sample[3], "quota": ceiling.QUOTA_NEVER_REACHED,
                "extract": False,  # the offline model's sends queue no extraction
            })
    ceiling.load_clients(bench.url, clients)
    with Meter([]) as meter:
        result = ceiling.run_pgbench(str(embedded_program("pgbench")), bench.url, clients=bench.connections,
                                     threads=2, seconds=int(bench.seconds))
    result |= meter.per_request(result["requests"])
    bench.results["send ceiling (pgbench)"] = result | {"connections": bench.connections}
    print(f"  send ceiling (pgbench): {result}", flush=True)


def message_cursor(conn, chat_id: uuid.UUID, position: int) -> str:
    """The cursor of a page starting after the chat's message at this position."""
    seq = conn.execute("SELECT seq FROM messages WHERE chat_id = %s ORDER BY seq OFFSET %s LIMIT 1",
                       [chat_id, position]).fetchone()[0]
    return encode_cursor([seq])


def scenario_pages(bench: Bench) -> None:
    """Pages of 50 messages (the first, and one deep inside) in the 100- and the 200,000-message chat."""
    token = bench.token(bench.seeded.users["pages"])
    with psycopg.connect(bench.url) as conn:
        for name, size in (("small", 100), ("big", 200_000)):
            chat_id = bench.seeded.chats[name]
            cursor = message_cursor(conn, chat_id, size // 2)
            paths = [f"/chats/{chat_id}/messages?limit=50", f"/chats/{chat_id}/messages?limit=50&cursor={cursor}"]
            bench.load(f"messages page, {size:,}-message chat", [("GET", p, token, None) for p in paths])


def scenario_chats(bench: Bench) -> None:
    """Pages of 20 chats (the first, and one deep inside) for a user with 10 chats and one with 5,000."""
    with psycopg.connect(bench.url) as conn:
        for name, count in (("chats-light", 10), ("chats-heavy", 5_000)):
            user_id = bench.seeded.users[name]
            row = conn.execute("SELECT updated_at, id FROM chats WHERE user_id = %s ORDER BY updated_at DESC, id DESC"
                               " OFFSET %s LIMIT 1", [user_id, count // 2]).fetchone()
            cursor = encode_cursor([row[0].isoformat(), str(row[1])])
            paths = ["/chats?limit=20", f"/chats?limit=20&cursor={cursor}"]
            bench.load(f"chats page, {count:,} chats", [("GET", p, bench.token(user_id), None) for p in paths])


def scenario_memories(bench: Bench) -> None:
    """Memory search (50 different questions) and memory pages for a light and a heavy user."""
    questions = [TextMaker(seed=n).question() for n in range(50)]
    for name, label in (("memory-light", "40 messages, 10 memories"), ("memory-heavy", "60,000 messages, 2,000 memories")):
        token = bench.token(bench.seeded.users[name])
        bench.load(f"memory search, {label}",
                   [("GET", f"/memories/search?q={quote(q)}", token, None) for q in questions])
        bench.load(f"memories page, {label}", [("GET", "/memories?limit=20", token, None)])
    questions = locomo_questions()[::10]
    if questions:
        token = bench.token(bench.seeded.users["memory-common"])
        bench.load("memory search, 60,000 real sentences sharing a word",
                   [("GET", f"/memories/search?q={quote(q)}", token, None) for q in questions])


def scenario_mix(bench: Bench) -> None:
    """70% lists (chats, messages), 20% sends, 10% searches, over the send users, shuffled."""
    targets = []
    questions = [TextMaker(seed=n).question() for n in range(64)]
    for (user_id, chat_id), question in zip(bench.seeded.send_users, questions):
        token = bench.token(user_id)
        targets += [("GET", "/chats?limit=20", token, None)] * 4
        targets += [("GET", f"/chats/{chat_id}/messages?limit=50", token, None)] * 3
        targets += [("POST", f"/chats/{chat_id}/messages", token, '{"content": "{n}"}')] * 2
        targets += [("GET", f"/memories/search?q={quote(question)}", token, None)]
    random.Random(3).shuffle(targets)
    bench.load("mix 70% list / 20% send / 10% search", targets)


def scenario_login(bench: Bench) -> None:
    """A login burst at 16 connections while GET /chats is timed at 2; GET /chats alone first, for comparison."""
    user_id, _ = bench.seeded.send_users[0]
    reads = [("GET", "/chats?limit=20", bench.token(user_id), None)]
    bench.load("GET /chats alone (2 connections)", reads, connections=2)
    logins = [("POST", "/auth/login", None, json.dumps({"email": bench.seeded.email(f"send-{n}"), "password": PASSWORD}))
              for n in range(len(bench.seeded.send_users))]
    reader = threading.Thread(target=lambda: bench.load("GET /chats during the login burst (2 connections)", reads,
                                                        connections=2, warmup=0))
    reader.start()
    bench.load(f"login ({settings.load()['PASSWORD_HASH_METHOD']})", logins, warmup=0)
    reader.join()


def scenario_slow_model(bench: Bench) -> None:
    """bench/slow_model.py's run on the service as `make run` starts it: 64 sends wait on a 2 s model, GET /chats timed."""
    run = slow_model.run(fresh_database("memlayer_bench_slow"), *slow_model.SERVERS[0], seconds=bench.seconds)
    loaded = run["get_chats_loaded"]
    bench.results["GET /chats while 64 sends wait on a 2 s model"] = {
        "rps": None, "p50_ms": loaded["p50_ms"], "p90_ms": loaded["p90_ms"], "p99_ms": loaded["p99_ms"],
        "errors": run["send_errors"], "requests": loaded["n"], "connections": 1,
        "requests_waiting_max": run["pool_requests_waiting_max"],
        "samples_with_waiting": f"{run['pool_samples_with_waiting']} of {run['pool_samples']}",
        "model_calls_in_flight": run["model_calls_in_flight_peak"], "worker_rss_mb": run["worker_rss_mb"],
    }
    print(f"  slow model: {bench.results['GET /chats while 64 sends wait on a 2 s model']}", flush=True)


def ratio(results: dict, numerator: str, denominator: str, field: str) -> float | None:
    """results[numerator][field] / results[denominator][field], when both ran."""
    if numerator in results and denominator in results and results[denominator][field]:
        return round(results[numerator][field] / results[denominator][field], 2)
    return None


def summary(results: dict, workers: list[dict]) -> dict:
    """The targets' numbers: send vs ceiling, large vs small p50s, RSS."""
    return {
        "send_vs_ceiling": ratio(results, "send", "send ceiling (pgbench)", "rps"),
        "messages_page_p50_big_vs_small": ratio(results, "messages page, 200,000-message chat",
                                                "messages page, 100-message chat", "p50_ms"),
        "chats_page_p50_heavy_vs_light": ratio(results, "chats page, 5,000 chats", "chats page, 10 chats", "p50_ms"),
        "memories_page_p50_heavy_vs_light": ratio(results, "memories page, 60,000 messages, 2,000 memories",
                                                  "memories page, 40 messages, 10 memories", "p50_ms"),
        "memory_search_p50_heavy_vs_light": ratio(results, "memory search, 60,000 messages, 2,000 memories",
                                                  "memory search, 40 messages, 10 memories", "p50_ms"),
        "memory_search_p99_common_vs_varied": ratio(results, "memory search, 60,000 real sentences sharing a word",
                                                    "memory search, 60,000 messages, 2,000 memories", "p99_ms"),
        "workers": workers,
    }


def table(results: dict, totals: dict) -> str:
    """The results as one Markdown table and the target lines under it."""
    lines = ["| scenario | conns | req/s | p50 ms | p90 ms | p99 ms | errors | CPU ms/req service + PG | steal |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        rps = f"{r['rps']:,.0f}" if r.get("rps") is not None else "-"
        cpu = "-" if r.get("postgres_cpu_ms") is None else f"{r['service_cpu_ms'] or 0} + {r['postgres_cpu_ms']}"
        steal = f"{r['steal_pct']}%" if r.get("steal_pct") is not None else "-"
        lines.append(f"| {name} | {r['connections']} | {rps} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} "
                     f"| {r['errors']} | {cpu} | {steal} |")
    lines.append("")
    if totals["send_vs_ceiling"] is not None:
        lines.append(f"- send / ceiling: **{totals['send_vs_ceiling']:.0%}** of pgbench running the send path's own SQL")
    for key, label in (("messages_page_p50_big_vs_small", "messages page p50, 200,000 vs 100 messages"),
                       ("chats_page_p50_heavy_vs_light", "chats page p50, 5,000 vs 10 chats"),
                       ("memories_page_p50_heavy_vs_light", "memories page p50, heavy vs light user"),
                       ("memory_search_p50_heavy_vs_light", "memory search p50, heavy vs light user"),
                       ("memory_search_p99_common_vs_varied",
                        "memory search p99, a word in every message vs varied words (60,000 messages each)")):
        if totals[key] is not None:
            lines.append(f"- {label}: {totals[key]}×")
    slow = results.get("GET /chats while 64 sends wait on a 2 s model")
    if slow:
        lines.append(f"- slow model: pool requests_waiting max {slow['requests_waiting_max']} "
                     f"(samples > 0: {slow['samples_with_waiting']}), model calls in flight {slow['model_calls_in_flight']}")
    if totals["workers"]:
        lines.append("- gunicorn workers after the run: " + ", ".join(
            f"{w['rss_mb']} MB (peak {w['peak_rss_mb']} MB)" for w in totals["workers"]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each measured load")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (pgbench clients for the ceiling)")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), help="scenarios to run")
    parser.add_argument("--readme-from", type=Path, help="only rewrite README.md's table from this results file")
    args = parser.parse_args()
    if args.readme_from:
        write_readme_section(json.loads(args.readme_from.read_text()))
        return

    started = time.monotonic()
    url = fresh_database(DATABASE)
    print("seeding ...", flush=True)
    seeded = seed(url, settings.load()["PASSWORD_HASH_METHOD"])
    print(f"seeded in {time.monotonic() - started:.0f} s; starting the service", flush=True)
    bench = Bench(url, seeded, args.seconds, args.connections)
    workers = []
    try:
        for name in SCENARIOS:
            if name in args.only and name != "slow-model":
                print(f"{name}:", flush=True)
                globals()[f"scenario_{name.replace('-', '_')}"](bench)
        time.sleep(5)  # requests still queued when wrk stopped (logins) finish first
        workers = [rss_mb(worker) for worker in gunicorn_workers(bench.service)]
    finally:
        bench.stop()
    if "slow-model" in args.only:
        print("slow-model:", flush=True)
        scenario_slow_model(bench)

    totals = summary(bench.results, workers)
    print("\n" + table(bench.results, totals))
    out = ROOT / "bench" / "results" / f"{date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "date": date.today().isoformat(), "cpus": os.cpu_count(), "machine": platform.machine(),
        "seconds": args.seconds,
        "database": "MEMLAYER_DATABASE_URL" if os.environ.get("MEMLAYER_DATABASE_URL") else "embedded",
        "login_limit_override": LOGIN_LIMIT_OVERRIDE, "results": bench.results, "summary": totals,
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip(),
    }
    out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)} ({time.monotonic() - started:.0f} s in all)")
    if args.only == list(SCENARIOS):
        write_readme_section(json.loads(out.read_text()))
        print("README.md's `make bench` table now shows this run")


README_START = "<!-- make bench writes from here: the latest run's table (bench/run.py, write_readme_section) -->"
README_END = "<!-- make bench writes up to here -->"


def readme_section(document: dict) -> str:
    """The README's table of a results file: when and on what it ran, the ratio first, then every scenario."""
    totals = document["summary"]
    ratio_line = (f"**A send runs at {totals['send_vs_ceiling']:.0%} of its ceiling** (pgbench running the send's own "
                  "SQL, in the same run)." if totals.get("send_vs_ceiling") is not None else "")
    where = (f"Measured {document['date']} on this project's VM: {document.get('machine', 'x86_64')}, "
             f"{document['cpus']} CPUs shared by the service, PostgreSQL ({document['database']}) and the load "
             f"generators; git {document.get('git') or '?'}; {document['seconds']:.0f} s per scenario. "
             "Absolute rates move by up to a third between runs on this VM; compare ratios within one run.")
    return "\n\n".join(part for part in (where, ratio_line, table(document["results"], totals)) if part)


def write_readme_section(document: dict) -> None:
    """Replace the README's `make bench` table with this run's (between the two markers)."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    readme.write_text(text[:start] + "\n" + readme_section(document) + "\n" + text[end:])


if __name__ == "__main__":
    sys.exit(main())
