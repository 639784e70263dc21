"""Recall quality on LoCoMo: MemLayer's GET /memories/search against BM25 over the same texts, in one run.

    make bench-recall                  # the conversations in ../shared/data/locomo
    make bench-recall BENCH_ARGS="--data DIR"

Each conversation becomes one user, each session one chat, imported through the real API
(`memlayer serve`, no model configured; POST /chats/import) with the session's own date, every turn in
order as that user's message "<speaker>: <text>" (with " [shares a photo: <caption>]" when the turn has
one). `--compare-sending` also runs the lexical system with every turn sent as a message (stamped with
today's date, as before the import existed), to show what real dates change. Every question with evidence, category 5
(adversarial, no answer in the dialogue) left out, is asked of GET /memories/search?limit=50. The
ranked message ids map back to the turns' dia_ids, and the same texts are ranked by rank_bm25 for the
baseline. Then the same again with embeddings on: a local OpenAI-compatible embeddings server
(bench/embedding_server.py, all-MiniLM-L6-v2 from a PyPI package) started for the run, MemLayer
configured to use it, and a dense-only ranking (cosine over the same model's vectors) beside it.
Prints recall@k and hit@k (k = 1, 5, 10, 25, 50) overall and per category, and writes
bench/results/recall-<date>.json.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
from rank_bm25 import BM25Okapi

from embedding_server import MODEL_NAME, EmbeddingServer, MiniLM
from harness import ROOT, Service, fresh_database, percentiles  # bench/ is on sys.path when run as a script
from memlayer.storage.embedded import embedded_program

DATABASE = "memlayer_bench_recall"
SYSTEMS = ("MemLayer", "MemLayer + embeddings", "BM25", "MiniLM alone")
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "locomo"
KS = (1, 5, 10, 25, 50)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
PASSWORD = "bench password 1234"
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def turn_text(turn: dict) -> str:
    """What the user sends for one turn."""
    text = f"{turn['speaker']}: {turn['text']}"
    if turn.get("blip_caption"):
        text += f" [shares a photo: {turn['blip_caption']}]"
    return text


def sessions(conversation: dict) -> list[tuple[str, str, list[dict]]]:
    """(session key, date text, turns) in session order."""
    numbers = sorted(int(key.split("_")[1]) for key in conversation
                     if re.fullmatch(r"session_\d+", key) and conversation[key])
    return [(f"session_{n}", conversation.get(f"session_{n}_date_time", ""), conversation[f"session_{n}"])
            for n in numbers]


def normalized_evidence(evidence: list[str], known: set[str]) -> list[str]:
    """The evidence ids as turn ids: split joined ids, drop stray colons and zero padding, keep known turns."""
    ids = []
    for entry in evidence:
        for part in re.split(r"[;,\s]+", entry):
            match = re.fullmatch(r"D:?(\d+):0*(\d+)", part.strip())
            if match:
                dia_id = f"D{int(match.group(1))}:{int(match.group(2))}"
                if dia_id in known and dia_id not in ids:
                    ids.append(dia_id)
    return ids


def load_conversation(path: Path) -> dict:
    """One LoCoMo file as {name, sessions, questions}, evidence normalized."""
    data = json.loads(path.read_text())
    conversation = data.get("conversation", data)
    all_sessions = sessions(conversation)
    known = {turn["dia_id"] for _, _, turns in all_sessions for turn in turns}
    questions = []
    for qa in data["qa"]:
        if qa.get("category") == 5:
            continue
        evidence = normalized_evidence(qa.get("evidence") or [], known)
        if evidence:
            questions.append({"question": qa["question"], "category": qa["category"], "evidence": evidence})
    return {"name": path.stem, "sessions": all_sessions, "questions": questions}


def english_stopwords() -> set[str]:
    """PostgreSQL's English stopword list (the one MemLayer's search uses), from the embedded server's files."""
    share = embedded_program("psql").parent.parent / "share"
    stop_file = next(share.rglob("tsearch_data/english.stop"))
    return {line.strip() for line in stop_file.read_text().splitlines() if line.strip()}


def bm25_tokens(text: str, stopwords: set[str]) -> list[str]:
    """Lowercase words without stopwords, no stemming: the textbook baseline."""
    return [word for word in WORD.findall(text.lower()) if word not in stopwords]


class Scores:
    """recall@k and hit@k, overall and per category, for one system."""

    def __init__(self):
        self.per_category = defaultdict(lambda: defaultdict(list))

    def add(self, category: int, evidence: list[str], ranked: list[str]) -> None:
        """Score one question's ranking against its evidence."""
        for k in KS:
            found = len(set(evidence) & set(ranked[:k]))
            self.per_category[category][f"R@{k}"].append(found / len(evidence))
            self.per_category[category][f"H@{k}"].append(1.0 if found else 0.0)

    def table(self) -> dict:
        """{"all": {metric: mean}, "<category>": {...}, "n": ...}."""
        merged = defaultdict(list)
        out = {}
        for category, metrics in sorted(self.per_category.items()):
            out[CATEGORIES.get(category, str(category))] = {m: round(sum(v) / len(v), 3) for m, v in metrics.items()}
            out[CATEGORIES.get(category, str(category))]["n"] = len(metrics["R@1"])
            for metric, values in metrics.items():
                merged[metric].extend(values)
        out["all"] = {m: round(sum(v) / len(v), 3) for m, v in merged.items()}
        out["all"]["n"] = len(merged["R@1"])
        return out


def session_time(text: str) -> datetime:
    """A session's date as LoCoMo writes it ("1:56 pm on 8 May, 2023"), in UTC."""
    return datetime.strptime(text, "%I:%M %p on %d %B, %Y").replace(tzinfo=timezone.utc)


def import_into_memlayer(service: Service, conversation: dict) -> tuple[str, dict]:
    """Register the conversation's user, import each session as a chat with its date (a turn a minute);
    return (token, message id -> dia_id)."""
    token = register(service, conversation)
    ids = {}
    for key, when, turns in conversation["sessions"]:
        began = session_time(when)
        messages = [{"role": "user", "content": turn_text(turn), "created_at": (began + timedelta(minutes=n)).isoformat()}
                    for n, turn in enumerate(turns)]
        status, chat = service.request("POST", "/chats/import", {"title": f"{key} ({when})", "messages": messages},
                                       token)
        assert status == 201, (status, chat)
        stored = all_messages(service, chat["id"], token)
        assert len(stored) == len(turns)
        ids.update({message["id"]: turn["dia_id"] for message, turn in zip(stored, turns)})
    return token, ids


def register(service: Service, conversation: dict) -> str:
    """The conversation's user, registered; their access token."""
    email = f"locomo-{conversation['name']}@example.com"
    status, tokens = service.request("POST", "/auth/register", {"email": email, "password": PASSWORD})
    assert status == 201, (status, tokens)
    return tokens["access_token"]


def send_into_memlayer(service: Service, conversation: dict) -> tuple[str, dict]:
    """Register the conversation's user, send every turn (stamped now); return (token, message id -> dia_id)."""
    token = register(service, conversation)
    ids = {}
    for key, when, turns in conversation["sessions"]:
        status, chat = service.request("POST", "/chats", {"title": f"{key} ({when})"}, token)
        assert status == 201, (status, chat)
        for turn in turns:
            status, reply = service.request("POST", f"/chats/{chat['id']}/messages", {"content": turn_text(turn)}, token)
            assert status == 201, (status, reply)
        sent = [m for m in all_messages(service, chat["id"], token) if m["role"] == "user"]
        assert len(sent) == len(turns)
        ids.update({message["id"]: turn["dia_id"] for message, turn in zip(sent, turns)})
    return token, ids


def all_messages(service: Service, chat_id: str, token: str) -> list[dict]:
    """Every message of a chat, oldest first: the latest page, then rel="prev" back to the first."""
    pages, path = [], f"/chats/{chat_id}/messages?limit=200"
    while path:
        status, page = service.request("GET", path, token=token)
        assert status == 200, (status, page)
        pages.append(page)
        match = re.search(r'<([^>]+)>;\s*rel="prev"', service.last_headers.get("Link", ""))
        path = match.group(1) if match else None
        if path and path.startswith("http"):
            path = "/" + path.split("/", 3)[3]
    return [message for page in reversed(pages) for message in page]


def ask_memlayer(service: Service, conversation: dict, token: str, dia_of: dict, scores: "Scores",
                 latencies: list) -> None:
    """Ask every question of GET /memories/search and score the ranking."""
    for qa in conversation["questions"]:
        began = time.perf_counter()
        status, items = service.request(
            "GET", "/memories/search?" + urlencode({"q": qa["question"], "limit": 50}), token=token)
        latencies.append((time.perf_counter() - began) * 1000)
        assert status == 200, (status, items)
        scores.add(qa["category"], qa["evidence"], [dia_of.get(item["id"]) for item in items])


def run_memlayer(conversations: list[dict], database: str, env: dict | None = None, *,
                 load=import_into_memlayer) -> tuple["Scores", dict]:
    """Load every conversation into a fresh `memlayer serve` and ask its questions; (scores, search latency)."""
    scores, latencies = Scores(), []
    url = fresh_database(database)
    service = Service(url, env)
    try:
        for conversation in conversations:
            token, dia_of = load(service, conversation)
            if env and env.get("MEMLAYER_EMBEDDING_MODEL") and load is import_into_memlayer:
                backfill_vectors(url, env)  # imports are not embedded on the way in: the backfill gives them vectors
            ask_memlayer(service, conversation, token, dia_of, scores, latencies)
            print(f"  {conversation['name']}: {len(dia_of)} turns, {len(conversation['questions'])} questions", flush=True)
    finally:
        service.stop()
    return scores, percentiles(latencies)


def backfill_vectors(url: str, env: dict) -> None:
    """`memlayer embed` on the bench's database, as an operator runs it after an import."""
    subprocess.run([sys.executable, "-m", "memlayer", "embed"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, **env, "MEMLAYER_DATABASE_URL": url})


def run_baselines(conversations: list[dict], model: MiniLM) -> tuple["Scores", "Scores"]:
    """BM25 and the embedding model alone, over the same texts and questions."""
    stopwords = english_stopwords()
    bm25_scores, dense_scores = Scores(), Scores()
    for conversation in conversations:
        texts = {turn["dia_id"]: turn_text(turn) for _, _, turns in conversation["sessions"] for turn in turns}
        order = list(texts)
        bm25 = BM25Okapi([bm25_tokens(texts[dia_id], stopwords) for dia_id in order])
        vectors = model.embed([texts[dia_id] for dia_id in order])
        questions = model.embed([qa["question"] for qa in conversation["questions"]])
        for qa, question in zip(conversation["questions"], questions):
            lexical = bm25.get_scores(bm25_tokens(qa["question"], stopwords))
            bm25_scores.add(qa["category"], qa["evidence"], [order[i] for i in np.argsort(-lexical, kind="stable")[:50]])
            dense = vectors @ question
            dense_scores.add(qa["category"], qa["evidence"], [order[i] for i in np.argsort(-dense, kind="stable")[:50]])
    return bm25_scores, dense_scores


def main() -> None:
    """Load every conversation, ask every question of every system, print the tables, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of LoCoMo conversation files")
    parser.add_argument("--lexical-only", action="store_true", help="skip the runs with embeddings")
    parser.add_argument("--compare-sending", action="store_true",
                        help="also load every turn by sending it (today's date), lexical only")
    args = parser.parse_args()

    started = time.monotonic()
    conversations = [load_conversation(path) for path in sorted(args.data.glob("*.json"))]
    systems, timings = {}, {}
    print("MemLayer, no model configured:", flush=True)
    systems["MemLayer"], timings["MemLayer"] = run_memlayer(conversations, DATABASE)
    if args.compare_sending:
        print("MemLayer, no model configured, every turn sent (dated today):", flush=True)
        systems["MemLayer, turns sent"], timings["MemLayer, turns sent"] = run_memlayer(
            conversations, DATABASE + "_sent", load=send_into_memlayer)
    model = MiniLM()
    if not args.lexical_only:
        server = EmbeddingServer(model)
        print(f"MemLayer with embeddings ({MODEL_NAME} at {server.base_url}):", flush=True)
        try:
            env = {"MEMLAYER_EMBEDDING_MODEL": MODEL_NAME, "MEMLAYER_EMBEDDING_BASE_URL": server.base_url,
                   "MEMLAYER_EMBEDDING_TIMEOUT": "10"}
            systems["MemLayer + embeddings"], timings["MemLayer + embeddings"] = run_memlayer(
                conversations, DATABASE + "_vectors", env)
            timings["embedding a question"] = embedding_latency(model, conversations)
        finally:
            server.stop()
    systems["BM25"], dense = run_baselines(conversations, model)
    if not args.lexical_only:
        systems["MiniLM alone"] = dense
    tables = {name: scores.table() for name, scores in systems.items()}
    print_tables(tables)
    print()
    for name, timing in timings.items():
        what = "GET /memories/search" if name != "embedding a question" else "embedding a question (in-process)"
        print(f"{what}, {name}: p50 {timing['p50_ms']} ms, p99 {timing['p99_ms']} ms over {timing['n']}")
    print(f"({time.monotonic() - started:.0f} s in all)")
    out = ROOT / "bench" / "results" / f"recall-{date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "conversations": [c["name"] for c in conversations], "embedding_model": MODEL_NAME,
        "systems": tables, "latency": timings,
    }, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


def embedding_latency(model: MiniLM, conversations: list[dict]) -> dict:
    """How long the model takes for one question, as a send's or a search's embedding call pays it."""
    samples = []
    for conversation in conversations:
        for qa in conversation["questions"][:20]:
            began = time.perf_counter()
            model.embed([qa["question"]])
            samples.append((time.perf_counter() - began) * 1000)
    return percentiles(samples)


def print_tables(tables: dict) -> None:
    """Overall recall@k and hit@k per system, then recall@5 and @10 per category."""
    width = max(map(len, tables))
    metrics = [f"R@{k}" for k in KS] + [f"H@{k}" for k in KS]
    print(f"\n| {'system':<{width}} | " + " | ".join(f"{m:>5}" for m in metrics) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * 7 for _ in metrics) + "|")
    for name, table in tables.items():
        print(f"| {name:<{width}} | " + " | ".join(f"{table['all'][m]:.3f}" for m in metrics) + " |")
    first = next(iter(tables.values()))
    categories = [c for c in first if c != "all"]
    headers = [f"{c} ({first[c]['n']})" for c in categories]
    print("\nR@5 / R@10 per category (questions)")
    print(f"| {'system':<{width}} | " + " | ".join(f"{h:>13}" for h in headers) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * (max(13, len(h)) + 2) for h in headers) + "|")
    for name, table in tables.items():
        print(f"| {name:<{width}} | " + " | ".join(
            f"{table[c]['R@5']:.3f} / {table[c]['R@10']:.3f}".rjust(max(13, len(h))) for c, h in zip(categories, headers)) + " |")


if __name__ == "__main__":
    main()
