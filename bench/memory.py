"""Memory benchmark: recall and GET /memories/search with 10,000 users and 1,000,000 messages.

    make bench-memory                 # embedded PostgreSQL under .memlayer/bench
    MEMLAYER_DATABASE_URL=postgresql://... make bench-memory   # a database "memlayer_bench" on that server

Seeds once (kept for later runs; --reseed starts over), then measures on the heavy user (60,000
messages, 2,000 memories) and a light one (40 messages):
  - recall: the SQL the assistant's context assembly runs, through the service's own pool settings;
  - GET /memories/search over HTTP, against `memlayer serve` (gunicorn) started for the run;
  - page costs: a page of messages in a 20,000-message chat vs a 40-message one, a page of
    memories for 2,000 vs a few, first page and a deep page;
and prints the EXPLAIN (ANALYZE, BUFFERS) plan of one heavy-user recall. Writes bench/results/memory-<date>.json.
"""

import argparse
import json
import os
import time
from datetime import date
from urllib.parse import urlencode

import psycopg
from werkzeug.security import generate_password_hash

from harness import ROOT, Service, bench_database_url, percentiles  # bench/ is on sys.path when run as a script
from memlayer import config
from memlayer.memory.recall import recall
from memlayer.storage.db import create_pool, sql
from memlayer.storage.migrate import apply_migrations
from memlayer.web.pagination import encode_cursor
from memory_data import Plan, TextMaker, seed

PASSWORD = "bench password 1234"
CAT_QUESTION = "what was my cat called again?"


def bench_database(reseed: bool, plan: Plan) -> str:
    """URL of the benchmark database, migrated and seeded."""
    url = bench_database_url("memlayer_bench")
    apply_migrations(url)
    with psycopg.connect(url, autocommit=True) as conn:
        users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
        if reseed or users != plan.users:
            print(f"seeding {plan.users:,} users and {plan.messages:,} messages (a few minutes)...", flush=True)
            started = time.monotonic()
            conn.execute("TRUNCATE users, revoked_tokens CASCADE")  # everything of every user goes with them
            emails = [f"bench-{i}@example.com" for i in range(plan.users)]
            with conn.transaction():
                seed(conn, plan, generate_password_hash(PASSWORD, "scrypt:16384:8:1"), emails)
            conn.execute("VACUUM ANALYZE")
            print(f"seeded in {time.monotonic() - started:.0f} s", flush=True)
    return url


def user_facts(conn, email: str) -> dict:
    """Id, message count, biggest chat and memory count of one user."""
    user_id = conn.execute("SELECT id FROM users WHERE email = %s", [email]).fetchone()[0]
    messages, chat_id = conn.execute(
        "SELECT count(*), (SELECT chat_id FROM messages WHERE user_id = %(u)s GROUP BY chat_id ORDER BY count(*) DESC LIMIT 1) "
        "FROM messages WHERE user_id = %(u)s", {"u": user_id}).fetchone()
    memories = conn.execute("SELECT count(*) FROM memories WHERE user_id = %s", [user_id]).fetchone()[0]
    middle_seq = conn.execute(
        "SELECT seq FROM messages WHERE chat_id = %s ORDER BY seq OFFSET (SELECT count(*) / 2 FROM messages WHERE chat_id = %s) LIMIT 1",
        [chat_id, chat_id]).fetchone()[0]
    middle_memory = conn.execute(
        "SELECT created_at, id FROM memories WHERE user_id = %s ORDER BY created_at DESC, id DESC "
        "OFFSET (SELECT count(*) / 2 FROM memories WHERE user_id = %s) LIMIT 1", [user_id, user_id]).fetchone()
    return {"email": email, "id": user_id, "messages": messages, "chat_id": chat_id, "chat_messages_middle_seq": middle_seq,
            "memories": memories, "middle_memory": middle_memory}


def measure_recall(pool, user_id, texts: list[str]) -> dict:
    """Latency of the recall query, as context assembly runs it (own transaction, pooled connection)."""
    samples = []
    for text in texts[:20]:  # warm-up: caches and prepared statements, as in a running service
        with pool.connection() as conn, conn.transaction():
            recall(conn, user_id=user_id, text=text, limit=5)
    for text in texts:
        started = time.perf_counter()
        with pool.connection() as conn, conn.transaction():
            recall(conn, user_id=user_id, text=text, limit=5)
        samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples)


def main() -> None:
    """Seed if needed, measure, print a table and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300, help="timed queries per measurement")
    parser.add_argument("--reseed", action="store_true")
    args = parser.parse_args()

    plan = Plan(users=args.users, messages=args.messages)
    url = bench_database(args.reseed, plan)
    text = TextMaker(seed=2026)
    questions = [CAT_QUESTION] + [text.question() for _ in range(args.queries - 1)]
    new_messages = [text.sentence(4, 18) for _ in range(args.queries)]
    with psycopg.connect(url, autocommit=True) as conn:
        totals = conn.execute("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM messages), "
                              "(SELECT count(*) FROM memories)").fetchone()
        heavy, light = user_facts(conn, "bench-0@example.com"), user_facts(conn, f"bench-{plan.users - 1}@example.com")
        plan_text = "\n".join(row[0] for row in conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS) " + sql.memories.recall.sql,
            {"user_id": heavy["id"], "text": CAT_QUESTION, "window_chat_id": None, "window_start_seq": None,
             "limit": 5, "model": None, "embedding": None}))

    settings = {**config.load(), "DATABASE_URL": url, "POOL_MIN_SIZE": 1, "POOL_MAX_SIZE": 2}
    pool = create_pool(settings)
    pool.open(wait=True)
    rows = {}
    try:
        for who in (heavy, light):
            rows[f"recall, question ({who['email']})"] = measure_recall(pool, who["id"], questions)
            rows[f"recall, whole new message ({who['email']})"] = measure_recall(pool, who["id"], new_messages)
    finally:
        pool.close()

    service = Service(url)
    try:
        for who in (heavy, light):
            status, tokens = service.request("POST", "/auth/login", {"email": who["email"], "password": PASSWORD})
            assert status == 200, tokens
            token = tokens["access_token"]
            rows[f"GET /memories/search ({who['email']})"] = service.timed(
                ["/memories/search?" + urlencode({"q": q}) for q in questions], token)
            chat_path = f"/chats/{who['chat_id']}/messages?limit=50"
            deep = encode_cursor([who["chat_messages_middle_seq"]])
            rows[f"GET messages page 1, {who['messages']:,}-message user"] = service.timed([chat_path] * args.queries, token)
            rows[f"GET messages deep page, {who['messages']:,}-message user"] = service.timed(
                [f"{chat_path}&cursor={deep}"] * args.queries, token)
            rows[f"GET /memories page 1, {who['memories']:,} memories"] = service.timed(["/memories?limit=50"] * args.queries, token)
            if who["middle_memory"]:
                cursor = encode_cursor([who["middle_memory"][0].isoformat(), str(who["middle_memory"][1])])
                rows[f"GET /memories deep page, {who['memories']:,} memories"] = service.timed(
                    [f"/memories?limit=50&cursor={cursor}"] * args.queries, token)
    finally:
        service.stop()

    print(f"\n{totals[0]:,} users, {totals[1]:,} messages, {totals[2]:,} memories; "
          f"heavy user: {heavy['messages']:,} messages, {heavy['memories']:,} memories\n")
    width = max(map(len, rows))
    print(f"{'measurement':<{width}}  {'n':>5}  {'p50 ms':>8}  {'p99 ms':>8}")
    for name, result in rows.items():
        print(f"{name:<{width}}  {result['n']:>5}  {result['p50_ms']:>8.2f}  {result['p99_ms']:>8.2f}")
    print("\nEXPLAIN (ANALYZE, BUFFERS) of the heavy user's recall for", repr(CAT_QUESTION))
    print(plan_text)

    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"memory-{date.today().isoformat()}.json"
    server = "embedded" if not os.environ.get("MEMLAYER_DATABASE_URL") else "MEMLAYER_DATABASE_URL"
    with psycopg.connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    out.write_text(json.dumps({
        "date": date.today().isoformat(), "postgresql": version, "database": server, "cpus": os.cpu_count(),
        "users": totals[0], "messages": totals[1], "memories": totals[2],
        "results": rows, "recall_plan": plan_text.splitlines(),
    }, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
