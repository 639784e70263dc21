"""Recall by meaning at scale: nearest neighbours among one user's rows, three ways, on 1,000,000 messages.

    make bench-vectors                         # on bench-memory's database (seeded once, kept)
    make bench-vectors BENCH_ARGS="--hnsw"     # also build an HNSW index once (minutes) and time iterative scans

Gives every user message of bench-memory's database (10,000 users, 1,000,000 messages) a random
384-dimensional vector of the model "bench-random" (once). Then, at 16 concurrent clients (threads, each
with its own connection, as 16 requests in gunicorn's workers would run), for the heavy user (60,000
messages) and a light one (40 messages), times:
  - the whole recall query without a vector (lexical) and with one (fused, as MemLayer runs it); the
    embedding call is not part of it;
  - the 50 nearest alone: MemLayer's two passes (recall_nearest: the 500 nearest by the sign bits in
    the covering index, re-ranked by cosine), a brute-force exact scan of the user's rows, and, with
    --hnsw, an HNSW index scan with iterative scans (strict order) filtered to the user; each with the
    share of the brute-force top 50 it finds.
Random vectors have no clusters: the hardest case for a graph index and for sign bits alike. Real
embeddings do better on that share; the timings do not depend on what the vectors hold.
"""

import argparse
import json
import os
import platform
import random
import statistics
import threading
import time
from datetime import date

import psycopg
from psycopg import sql as pgsql
from psycopg.rows import dict_row

from harness import ROOT, percentiles  # bench/ is on sys.path when run as a script
from memlayer.memory.embeddings import Vector
from memlayer.memory.recall import recall
from memory import bench_database
from memory_data import Plan, TextMaker

MODEL = "bench-random"
DIMENSIONS = 384
CLIENTS = 16


def random_vector(rng: random.Random) -> list[float]:
    """A random direction."""
    return [rng.uniform(-1, 1) for _ in range(DIMENSIONS)]


def give_vectors(url: str) -> None:
    """A random vector for every user message that has none of MODEL (generated inside PostgreSQL).

    The table's indexes and unique constraints are dropped for the load and rebuilt after it: row by row,
    half a million random uuids in three btrees cost hours of random I/O on this VM.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        missing = conn.execute("SELECT count(*) FROM messages AS m WHERE m.role = 'user' AND NOT EXISTS "
                               "(SELECT FROM embeddings AS e WHERE e.message_id = m.id)").fetchone()[0]
        if not missing:
            return
        started = time.monotonic()
        with conn.transaction():
            constraints = conn.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'embeddings'::regclass AND contype = 'u'").fetchall()
            indexes = [row[0] for row in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'embeddings' AND indexname NOT IN "
                "(SELECT conname FROM pg_constraint WHERE conrelid = 'embeddings'::regclass)")]
            for name, _ in constraints:
                conn.execute(pgsql.SQL("ALTER TABLE embeddings DROP CONSTRAINT {}").format(pgsql.Identifier(name)))
            for (name,) in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'embeddings'").fetchall():
                conn.execute(pgsql.SQL("DROP INDEX {}").format(pgsql.Identifier(name)))
            conn.execute(f"""
                INSERT INTO embeddings (user_id, message_id, model, embedding)
                SELECT m.user_id, m.id, '{MODEL}',
                       -- correlated with the row, so every message gets its own random values
                       (SELECT array_agg(random() * 2 - 1)
                        FROM generate_series(1, {DIMENSIONS} + 0 * (m.seq % 1)))::vector
                FROM messages AS m
                WHERE m.role = 'user' AND NOT EXISTS (SELECT FROM embeddings AS e WHERE e.message_id = m.id)
            """)
            conn.execute("SET maintenance_work_mem = '512MB'")
            for name, definition in constraints:
                conn.execute(pgsql.SQL("ALTER TABLE embeddings ADD CONSTRAINT {} " + definition).format(
                    pgsql.Identifier(name)))
            for definition in indexes:
                conn.execute(definition)
        conn.execute("VACUUM ANALYZE embeddings")
        print(f"gave {missing:,} messages a vector in {time.monotonic() - started:.0f} s", flush=True)


def build_hnsw(url: str) -> None:
    """An HNSW index over MODEL's vectors (cosine), built once."""
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.monotonic()
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute(f"CREATE INDEX IF NOT EXISTS embeddings_bench_hnsw ON embeddings USING hnsw "
                     f"((embedding::vector({DIMENSIONS})) vector_cosine_ops) WHERE model = '{MODEL}'")
        print(f"HNSW index ready in {time.monotonic() - started:.0f} s", flush=True)


def under_load(url: str, seconds: float, work) -> dict:
    """p50/p99 and rate of `work(conn, rng)` run by CLIENTS threads in a loop for `seconds`."""
    samples, lock = [], threading.Lock()
    deadline = time.monotonic() + seconds

    def client(number: int) -> None:
        rng = random.Random(number)
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            work(conn, rng)  # warm-up
            while time.monotonic() < deadline:
                started = time.perf_counter()
                work(conn, rng)
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    samples.append(elapsed)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return percentiles(samples) | {"per_second": round(len(samples) / seconds, 1)}


def nearest_two_pass(conn, user_id, query: str) -> list:
    """The user's 50 nearest items as recall finds them (recall_nearest)."""
    return [row["item_id"] for row in conn.execute(
        "SELECT item_id FROM recall_nearest(%s, %s, %s, 50)", [user_id, MODEL, query], prepare=False)]


def nearest_brute_force(conn, user_id, query: str) -> list:
    """The user's exact 50 nearest items: every vector of the user compared with the query."""
    return [row["item_id"] for row in conn.execute(
        "SELECT item_id FROM embeddings WHERE user_id = %s AND model = %s ORDER BY embedding <=> %s::vector LIMIT 50",
        [user_id, MODEL, query], prepare=False)]


def nearest_hnsw(conn, user_id, query: str) -> list:
    """The user's 50 nearest items through the HNSW index, iterative scans on."""
    with conn.transaction():
        conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
        return [row["item_id"] for row in conn.execute(
            f"SELECT item_id FROM embeddings WHERE model = %s AND user_id = %s "
            f"ORDER BY embedding::vector({DIMENSIONS}) <=> %s::vector({DIMENSIONS}) LIMIT 50",
            [MODEL, user_id, query], prepare=False)]


def overlap(url: str, user_id, nearest, queries: int = 20) -> float:
    """The share of the brute-force 50 nearest that `nearest` finds, over random queries."""
    rng, shares = random.Random(99), []
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        for _ in range(queries):
            query = Vector.of(MODEL, random_vector(rng)).literal
            truth = nearest_brute_force(conn, user_id, query)
            shares.append(len(set(nearest(conn, user_id, query)) & set(truth)) / max(1, len(truth)))
    return round(statistics.mean(shares), 3)


def main() -> None:
    """Seed what is missing, time each variant under load, print a table, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each timed load")
    parser.add_argument("--hnsw", action="store_true", help="build an HNSW index (once) and time iterative scans")
    args = parser.parse_args()

    plan = Plan(users=10_000, messages=1_000_000)
    url = bench_database(False, plan)
    give_vectors(url)
    if args.hnsw:
        build_hnsw(url)
    with psycopg.connect(url) as conn:
        heavy = conn.execute("SELECT id FROM users WHERE email = 'bench-0@example.com'").fetchone()[0]
        light = conn.execute("SELECT id FROM users WHERE email = %s", [f"bench-{plan.users - 1}@example.com"]).fetchone()[0]
        vectors = conn.execute("SELECT count(*) FROM embeddings WHERE model = %s", [MODEL]).fetchone()[0]
    questions = [TextMaker(seed=n).question() for n in range(50)]

    rows = {}
    for who, user_id in (("heavy user (60,000 messages)", heavy), ("light user (40 messages)", light)):
        def lexical(conn, rng, user_id=user_id):
            recall(conn, user_id=user_id, text=rng.choice(questions), limit=5)

        def fused(conn, rng, user_id=user_id):
            vector = Vector.of(MODEL, random_vector(rng))
            recall(conn, user_id=user_id, text=rng.choice(questions), limit=5, vector=vector)

        rows[f"recall, lexical, {who}"] = under_load(url, args.seconds, lexical)
        rows[f"recall with a vector, {who}"] = under_load(url, args.seconds, fused)
        ways = {"two passes (sign bits, then cosine)": nearest_two_pass, "brute-force exact scan": nearest_brute_force}
        if args.hnsw:
            ways["HNSW iterative scan"] = nearest_hnsw
        for label, nearest in ways.items():
            def timed(conn, rng, user_id=user_id, nearest=nearest):
                nearest(conn, user_id, Vector.of(MODEL, random_vector(rng)).literal)

            rows[f"nearest 50, {label}, {who}"] = under_load(url, args.seconds, timed) | {
                "share_of_exact_top50": overlap(url, user_id, nearest)}
        for name in [name for name in rows if name.endswith(who)]:
            print(f"  {name}: {rows[name]}", flush=True)

    print(f"\n{vectors:,} vectors of {DIMENSIONS} dimensions; {CLIENTS} concurrent clients, {args.seconds:.0f} s each\n")
    width = max(map(len, rows))
    print(f"| {'measurement':<{width}} | per s | p50 ms | p99 ms | share of exact top 50 |")
    print(f"|{'-' * (width + 2)}|------:|-------:|-------:|------:|")
    for name, r in rows.items():
        print(f"| {name:<{width}} | {r['per_second']:>5} | {r['p50_ms']:>6} | {r['p99_ms']:>6} | "
              f"{r.get('share_of_exact_top50', '-'):>5} |")
    out = ROOT / "bench" / "results" / f"vectors-{date.today().isoformat()}.json"
    out.write_text(json.dumps({"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
                               "vectors": vectors, "dimensions": DIMENSIONS, "clients": CLIENTS, "results": rows},
                              indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
