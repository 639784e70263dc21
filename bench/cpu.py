"""`make bench-cpu`: worker CPU per send and per page, this checkout beside earlier commits, in one run.

Each tree (a baseline commit checked out as a git worktree, and this checkout) serves from its own fresh
database, migrated by its own `memlayer serve`, with the production settings. Every tree gets the same data
through its own API, then wrk loads each scenario on each tree in turn, the order reversed every round so
that the VM's drift falls on both sides alike. CPU is read from /proc for the tree's gunicorn workers only,
so the ratios compare the Python each request runs; PostgreSQL's CPU per request is shown beside it.

Usage: python bench/cpu.py [--baseline REV ...] [--rounds 3] [--seconds 8] [--connections 16] [--only send ...]
"""

import argparse
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
from datetime import date
from pathlib import Path

from harness import ROOT, Service, cpu_seconds, fresh_database, gunicorn_workers, postgres_cpu_seconds, wrk

# The code as it was when issue 21 set the target (60% of that day's worker CPU per send and per page).
ISSUE_21_BASELINE = "8523ad2"
SEND_USERS = 16
SCENARIOS = ("send", "messages page", "chats page")
TREES = ROOT / ".memlayer" / "bench" / "trees"
PASSWORD = "bench-password-4d1f"


def git(*args: str, cwd: Path = ROOT) -> str:
    """Output of a git command in the checkout."""
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def worktree(revision: str) -> Path:
    """A detached worktree of the revision under .memlayer/bench/trees (removed again at the end of the run)."""
    commit = git("rev-parse", "--short=10", f"{revision}^{{commit}}")
    path = TREES / commit
    if not (path / "memlayer").is_dir():
        TREES.mkdir(parents=True, exist_ok=True)
        git("worktree", "add", "--force", "--detach", str(path), commit)
    return path


class Tree:
    """One version of MemLayer served on its own database, with users and chats made through its API."""

    def __init__(self, label: str, path: Path, database: str):
        self.label, self.path = label, path
        self.service = Service(fresh_database(database, migrate=False), {
            "MEMLAYER_ENV": "production", "MEMLAYER_JWT_SECRET_KEY": secrets.token_urlsafe(48),
            "MEMLAYER_RATELIMIT_ENABLED": "false", "MEMLAYER_LOG_LEVEL": "INFO",
        }, tree=path, log_path=ROOT / ".memlayer" / "bench" / f"cpu-{database}.log")
        self.workers = gunicorn_workers(self.service)

    def call(self, method: str, path: str, body: dict | None = None, token: str | None = None) -> dict:
        """One API call that must succeed; its parsed body."""
        status, answer = self.service.request(method, path, body, token)
        if status >= 300:
            raise SystemExit(f"{self.label}: {method} {path} answered {status}: {answer}")
        return answer

    def login(self, email: str) -> str:
        """A fresh access token for the user."""
        return self.call("POST", "/auth/login", {"email": email, "password": PASSWORD})["access_token"]

    def seed(self) -> None:
        """16 send users with a chat each; a reader with 30 chats, one of them 120 messages long."""
        suffix = secrets.token_hex(4)
        self.emails = {name: f"{name}-{suffix}@bench.example" for name in
                       ["reader"] + [f"send-{n}" for n in range(SEND_USERS)]}
        for email in self.emails.values():
            self.call("POST", "/auth/register", {"email": email, "password": PASSWORD})
        self.send_chats = {}
        for n in range(SEND_USERS):
            email = self.emails[f"send-{n}"]
            self.send_chats[email] = self.call("POST", "/chats", {"title": "bench"}, self.login(email))["id"]
        token = self.login(self.emails["reader"])
        chats = [self.call("POST", "/chats", {"title": f"chat {n}"}, token)["id"] for n in range(30)]
        self.long_chat = chats[0]
        for n in range(60):
            self.call("POST", f"/chats/{self.long_chat}/messages", {"content": f"message {n} about the garden"}, token)

    def targets(self, scenario: str) -> list:
        """wrk targets of a scenario, with tokens issued now (they last 15 minutes)."""
        if scenario == "send":
            return [("POST", f"/chats/{chat}/messages", self.login(email), '{"content": "{n}"}')
                    for email, chat in self.send_chats.items()]
        token = self.login(self.emails["reader"])
        if scenario == "messages page":
            return [("GET", f"/chats/{self.long_chat}/messages?limit=50", token, None)]
        return [("GET", "/chats?limit=20", token, None)]

    def measure(self, scenario: str, seconds: float, connections: int) -> dict:
        """wrk on one scenario after a 2 s warm-up; rate and CPU ms per request (workers, PostgreSQL)."""
        targets = self.targets(scenario)
        wrk(self.service.port, targets, seconds=2, connections=connections)
        before = cpu_seconds(self.workers), postgres_cpu_seconds()
        result = wrk(self.service.port, targets, seconds=seconds, connections=connections)
        service, postgres = (b - a for a, b in zip(before, (cpu_seconds(self.workers), postgres_cpu_seconds())))
        requests = max(result["requests"], 1)
        return result | {"service_cpu_ms": round(service * 1000 / requests, 3),
                         "postgres_cpu_ms": round(postgres * 1000 / requests, 3)}


def table(labels: list[str], runs: dict, scenarios: list[str]) -> str:
    """Median CPU ms per request per tree and scenario, and each tree's median ratio to the last (this checkout)."""
    current = labels[-1]
    lines = ["| scenario | " + " | ".join(f"{label}: worker + PG CPU ms/req, req/s" for label in labels)
             + " | " + " | ".join(f"{current} / {label} (worker CPU, each round)" for label in labels[:-1]) + " |",
             "|---|" + "---:|" * (2 * len(labels) - 1)]
    for scenario in scenarios:
        cells = []
        for label in labels:
            rounds = runs[label][scenario]
            cells.append(f"{statistics.median(r['service_cpu_ms'] for r in rounds):.2f} + "
                         f"{statistics.median(r['postgres_cpu_ms'] for r in rounds):.2f}, "
                         f"{statistics.median(r['rps'] for r in rounds):,.0f}")
        for label in labels[:-1]:
            ratios = [a["service_cpu_ms"] / b["service_cpu_ms"]
                      for a, b in zip(runs[current][scenario], runs[label][scenario])]
            cells.append(f"**{statistics.median(ratios):.2f}** ({', '.join(f'{r:.2f}' for r in ratios)})")
        lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Serve every tree, load each scenario on each in turn for --rounds rounds, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", nargs="+", default=[ISSUE_21_BASELINE], help="commits to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each measured load")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), help="scenarios to run")
    args = parser.parse_args()

    head = git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")
    sources = [(git("rev-parse", "--short", rev), worktree(rev)) for rev in args.baseline] + [(head, ROOT)]
    trees = []
    try:
        for n, (label, path) in enumerate(sources):
            print(f"starting {label} ({path}) and seeding it through its API", flush=True)
            trees.append(Tree(label, path, f"memlayer_bench_cpu_{n}"))
            trees[-1].seed()
        runs = {tree.label: {scenario: [] for scenario in SCENARIOS} for tree in trees}
        for round_number in range(args.rounds):
            order = trees if round_number % 2 == 0 else trees[::-1]
            for scenario in args.only:
                for tree in order:
                    result = tree.measure(scenario, args.seconds, args.connections)
                    runs[tree.label][scenario].append(result)
                    print(f"  round {round_number + 1}, {scenario}, {tree.label}: {result}", flush=True)
    finally:
        for tree in trees:
            tree.service.stop()
        for _, path in sources[:-1]:
            git("worktree", "remove", "--force", str(path))
    labels = [tree.label for tree in trees]
    print("\n" + table(labels, runs, args.only))
    out = ROOT / "bench" / "results" / f"cpu-{date.today().isoformat()}.json"
    out.write_text(json.dumps({
        "date": date.today().isoformat(), "cpus": os.cpu_count(), "machine": platform.machine(),
        "seconds": args.seconds, "connections": args.connections, "rounds": args.rounds, "trees": labels,
        "runs": runs, "table": table(labels, runs, args.only),
    }, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
