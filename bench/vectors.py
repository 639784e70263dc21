"""Recall by meaning at scale: exact nearest neighbours among one user's rows against pgvector's HNSW iterative scans.

    make bench-vectors                         # on bench-memory's database (seeded once, kept)
    make bench-vectors BENCH_ARGS="--hnsw"     # also build an HNSW index once (minutes) and time iterative scans

Gives every user message of bench-memory's database (10,000 users, 1,000,000 messages) a random
384-dimensional vector of the model "bench-random" (once). Then, at 16 concurrent clients (threads, each
with its own connection, as 16 requests in gunicorn's workers would run), for the heavy user (60,000
messages) and a light one (40 messages), times:
  - the whole recall query without a vector (lexical) and with one (lexical fused with the user's
    exact nearest neighbours, as MemLayer runs it); the embedding call is not part of it;
  - nearest neighbours alone: exact (recall_nearest), and, with --hnsw, an HNSW index scan with
    iterative scans (strict order) filtered to the user, with the share of the exact top 50 it finds.
Random vectors have no clusters, the hardest case for a graph index: real embeddings do better on
recall, the timings of the exact scan do not depend on what the vectors hold.
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
    """A random vector for every user message that has none of MODEL (generated inside PostgreSQL)."""
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.monotonic()
        added = conn.execute(f"""
            INSERT INTO embeddings (user_id, message_id, model, embedding)
            SELECT m.user_id, m.id, '{MODEL}',
                   -- correlated with the row, so every message gets its own random values
                   (SELECT array_agg(random() * 2 - 1) FROM generate_series(1, {DIMENSIONS} + 0 * (m.seq % 1)))::vector
            FROM messages AS m
            WHERE m.role = 'user' AND NOT EXISTS (SELECT FROM embeddings AS e WHERE e.message_id = m.id)
        """).rowcount
        if added:
            conn.execute("VACUUM ANALYZE embeddings")
            print(f"gave {added:,} messages a vector in {time.monotonic() - started:.0f} s", flush=True)


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


def nearest_exact(conn, user_id, query: str) -> list:
    """The user's exact 50 nearest items (the function recall uses)."""
    return [row["item_id"] for row in conn.execute(
        "SELECT item_id FROM recall_nearest(%s, %s, %s, 50)", [user_id, MODEL, query], prepare=False)]


def nearest_hnsw(conn, user_id, query: str) -> list:
    """The user's 50 nearest items through the HNSW index, iterative scans on."""
    with conn.transaction():
        conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
        return [row["item_id"] for row in conn.execute(
            f"SELECT item_id FROM embeddings WHERE model = %s AND user_id = %s "
            f"ORDER BY embedding::vector({DIMENSIONS}) <=> %s::vector({DIMENSIONS}) LIMIT 50",
            [MODEL, user_id, query], prepare=False)]


def overlap(url: str, user_id, queries: int = 20) -> float:
    """The share of the exact 50 nearest that the HNSW scan finds, over random queries."""
    rng, shares = random.Random(99), []
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        for _ in range(queries):
            query = Vector.of(MODEL, random_vector(rng)).literal
            truth = nearest_exact(conn, user_id, query)
            shares.append(len(set(nearest_hnsw(conn, user_id, query)) & set(truth)) / max(1, len(truth)))
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

        def exact(conn, rng, user_id=user_id):
            nearest_exact(conn, user_id, Vector.of(MODEL, random_vector(rng)).literal)

        rows[f"recall, lexical, {who}"] = under_load(url, args.seconds, lexical)
        rows[f"recall with a vector (exact), {who}"] = under_load(url, args.seconds, fused)
        rows[f"nearest 50, exact scan of the user's rows, {who}"] = under_load(url, args.seconds, exact)
        if args.hnsw:
            def hnsw(conn, rng, user_id=user_id):
                nearest_hnsw(conn, user_id, Vector.of(MODEL, random_vector(rng)).literal)

            name = f"nearest 50, HNSW iterative scan, {who}"
            rows[name] = under_load(url, args.seconds, hnsw) | {"share_of_exact_top50": overlap(url, user_id)}
        for name in list(rows)[-3 - args.hnsw:]:
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
