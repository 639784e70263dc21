"""Instructions per request, counted by valgrind: a measure of a request's Python that the VM's noise does not move.

Each tree (this checkout, or a commit's git worktree) builds its app in-process on its own fresh database and
serves N requests straight through the WSGI callable (no gunicorn, no HTTP, no kernel), under
`valgrind --tool=callgrind`; run with N1 and with N2 requests, the difference divided by N2 - N1 is what one
request costs in user-space instructions, start-up and warm-up cancelled out. Two runs agree within 0.1%.

Usage: python bench/instructions.py [--tree PATH ...] [--kind send|page|chats ...]
(installs Debian's valgrind when it is missing)
"""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from harness import ROOT, ensure_program, fresh_database

DRIVER = Path(__file__).resolve().parent / "instructions_driver.py"
RUNS = (60, 260)


def prepare_database(tree: Path) -> str:
    """A fresh database (on the benchmarks' server), migrated and seeded by the tree's own code; its URL."""
    url = fresh_database("memlayer_bench_instructions", migrate=False)
    setup = ("import psycopg\n"
             "try:\n from memlayer.storage.migrate import apply_migrations\n"
             " from memlayer.assistant.catalog import seed_models\n"
             "except ImportError:\n from memlayer.migrate import apply_migrations\n"
             " from memlayer.catalog import seed_models\n"
             f"apply_migrations({url!r})\n"
             f"with psycopg.connect({url!r}, autocommit=True) as c: seed_models(c, {{}})\n")
    subprocess.run([sys.executable, "-S", "-c", setup], env=tree_environment(tree), check=True, capture_output=True)
    return url


def tree_environment(tree: Path) -> dict:
    """Run Python on the tree's code: -S skips this venv's editable install, the venv's packages come by path."""
    packages = next(p for p in sys.path if p.endswith("site-packages"))
    return {**os.environ, "PYTHONPATH": f"{tree}:{packages}", "PYTHONHASHSEED": "0", "MEMLAYER_LOG_LEVEL": "WARNING"}


def instructions(tree: Path, kind: str, requests: int, url: str) -> int:
    """User-space instructions of a whole driver run of `requests` requests."""
    command = [ensure_program("valgrind"), "--tool=callgrind", "--callgrind-out-file=/dev/null",
               sys.executable, "-S", str(DRIVER), kind, str(requests), url]
    done = subprocess.run(command, env=tree_environment(tree), capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(f"driver failed on {tree} ({kind}):\n{done.stderr[-3000:]}")
    return int(found.group(1))


def per_request(tree: Path, kind: str) -> int:
    """Instructions one request of `kind` costs on the tree's code."""
    url = prepare_database(tree)
    low, high = (instructions(tree, kind, n, url) for n in RUNS)
    return (high - low) // (RUNS[1] - RUNS[0])


def main() -> None:
    """Print instructions per request for each tree and kind, and each tree's ratio to the first."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", nargs="+", type=Path, default=[ROOT], help="checkouts to measure, first is the base")
    parser.add_argument("--kind", nargs="+", default=["send", "page", "chats"], choices=["send", "page", "chats"])
    arguments = parser.parse_args()
    for kind in arguments.kind:
        counts = [per_request(tree.resolve(), kind) for tree in arguments.tree]
        cells = ", ".join(f"{tree}: {count:,} ({count / counts[0]:.2f}×)"
                          for tree, count in zip(arguments.tree, counts))
        print(f"{kind}: {cells}", flush=True)


if __name__ == "__main__":
    main()
