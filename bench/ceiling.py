"""The ceiling of a send: pgbench running the send path's own SQL, straight from the sql/ files.

SEND_PATH lists the statements a `POST /chats/{id}/messages` runs, transaction by transaction, in order
(tests/test_bench_ceiling.py checks it against what a real send executes). Each pgbench client plays one
bench user sending to their chat, with the parameters the service passes: the same ids, token id, model,
period, window and recall sizes, the window's first seq, a random number as the message (as the HTTP
benchmark sends), and the offline responder's reply with its usage as recorded by a real send.

Differences, all in the ceiling's favour: pgbench prepares every statement at once (the service prepares
after MEMLAYER_PREPARE_THRESHOLD runs), and it passes a quota too large to reach where the service passes NULL.
"""

import re
import statistics
import subprocess
import tempfile
from pathlib import Path

import psycopg

from memlayer.storage.db import sql

# (in a transaction?, queries): each entry is one connection checkout; a query is "<sql file>.<query name>".
SEND_PATH = (
    (False, ("tokens.token_is_usable",)),  # the token blocklist check: one statement in autocommit
    (False, ("chats.chat_for_send", "memories.recall")),  # reads: autocommit
    (False, ("messages.store_exchange",)),  # one statement: all-or-nothing in autocommit
)

# pgbench variables for parameters whose name means something else in another statement of the path.
RENAMED = {
    "memories.recall": {"limit": "recall_k", "text": "content", "window_chat_id": "chat_id"},
    "chats.chat_for_send": {"default_model": "model"},
}

QUOTA_NEVER_REACHED = 9_000_000_000_000_000_000

CLIENTS_TABLE = """
DROP TABLE IF EXISTS bench_clients;
CREATE TABLE bench_clients (
    client       int PRIMARY KEY,
    user_id      uuid NOT NULL,
    chat_id      uuid NOT NULL,
    jti          uuid NOT NULL,
    model        text NOT NULL,
    period       date NOT NULL,
    recent_limit int NOT NULL,
    recall_k     int NOT NULL,
    window_start_seq bigint NOT NULL,
    reply        text NOT NULL,
    prompt_tokens int NOT NULL,
    completion_tokens int NOT NULL,
    cost         numeric NOT NULL,
    quota        bigint NOT NULL,
    extract      boolean NOT NULL
)
"""


def statement(name: str) -> str:
    """One query of sql/ in pgbench's syntax: :name variables, comments dropped (a colon there would bind)."""
    resource, query = name.split(".")
    text = getattr(getattr(sql, resource), query).sql
    renames = RENAMED.get(name, {})
    text = re.sub(r"%\((\w+)\)s", lambda m: ":" + renames.get(m.group(1), m.group(1)), text).replace("%%", "%")
    text = "\n".join(strip_comment(line) for line in text.splitlines())
    return text.strip().rstrip(";") + ";"


def strip_comment(line: str) -> str:
    """The line without a trailing -- comment (outside string literals)."""
    quoted = False
    for index, char in enumerate(line):
        if char == "'":
            quoted = not quoted
        elif not quoted and line.startswith("--", index):
            return line[:index].rstrip()
    return line


def script() -> str:
    """The pgbench script: each client loads its parameters once, then sends like the service does."""
    lines = [
        "\\if :initialized = 0",
        "SELECT user_id, chat_id, jti, model, period, recent_limit, recall_k, window_start_seq, reply, prompt_tokens,",
        "       completion_tokens, cost, quota, extract, 1 AS initialized",
        "FROM bench_clients WHERE client = :client_id \\gset",
        "\\endif",
        "\\set content random(1, 100000000)",
    ]
    for in_transaction, queries in SEND_PATH:
        lines += ["BEGIN;"] if in_transaction else []
        lines.extend(statement(name) for name in queries)
        lines += ["COMMIT;"] if in_transaction else []
    return "\n".join(lines) + "\n"


def load_clients(url: str, clients: list[dict]) -> None:
    """(Re)create bench_clients with one row per pgbench client."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(CLIENTS_TABLE)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO bench_clients VALUES (%(client)s, %(user_id)s, %(chat_id)s, %(jti)s, %(model)s,"
                " %(period)s, %(recent_limit)s, %(recall_k)s, %(window_start_seq)s, %(reply)s, %(prompt_tokens)s,"
                " %(completion_tokens)s, %(cost)s, %(quota)s, %(extract)s)",
                clients,
            )


def run_pgbench(pgbench: str, url: str, *, clients: int, threads: int, seconds: int) -> dict:
    """Run the script for `seconds` with `clients` connections; sends per second, latency percentiles, failures."""
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "send.sql"
        path.write_text(script())
        command = [pgbench, "--no-vacuum", "--protocol=prepared", f"--client={clients}", f"--jobs={threads}",
                   f"--time={seconds}", "--define=initialized=0", f"--file={path}", "--log",
                   f"--log-prefix={Path(work) / 'tx'}", url]
        done = subprocess.run(command, capture_output=True, text=True, cwd=work)
        if done.returncode != 0:
            raise SystemExit(f"pgbench failed:\n{done.stdout}\n{done.stderr}")
        latencies_us = [int(line.split()[2]) for log in Path(work).glob("tx.*") for line in log.read_text().splitlines()]
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout).group(1))
    failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
    ordered = sorted(latencies_us)
    return {
        "rps": round(tps, 1),
        "p50_ms": round(statistics.median(ordered) / 1000, 2),
        "p90_ms": round(ordered[int(len(ordered) * 0.9)] / 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99)] / 1000, 2),
        "errors": int(failed.group(1)) if failed else 0,
        "requests": len(ordered),
    }
