"""The data `make bench` runs on, loaded with COPY into a fresh database, and access tokens for its users.

Users (all with one password, so one scrypt hash serves every row):
- 64 "send" users, each with one chat of 20 messages: the send, mix and login scenarios;
- "pages": a 100-message chat and a 200,000-message chat;
- "chats-heavy" with 5,000 chats and "chats-light" with 10;
- "memory-heavy" (60,000 messages in 300 chats, 2,000 memories) and "memory-light" (40 messages, 10 memories);
- "memory-common" (60,000 messages in 300 chats): real sentences, the turns of the LoCoMo conversations in
  ../shared/data/locomo over and over, each said by "Sam: ", so one word is in every message and everyday
  words repeat as they do in real chats.
Other texts are Zipf-distributed words (bench/memory_data.py), so searches match as many rows as in real chats.
"""

import itertools
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

from memlayer.auth.passwords import make_hash
from memory_data import TextMaker, copy_rows  # bench/ is on sys.path when run as a script

PASSWORD = "bench password 1234"
SEND_USERS = 64
SEND_CHAT_MESSAGES = 20
SMALL_CHAT_MESSAGES, BIG_CHAT_MESSAGES = 100, 200_000
HEAVY_CHATS, LIGHT_CHATS = 5_000, 10
HEAVY_MEMORY_MESSAGES, HEAVY_MEMORY_CHATS, HEAVY_MEMORIES = 60_000, 300, 2_000
LIGHT_MEMORY_MESSAGES, LIGHT_MEMORIES = 40, 10
COMMON_WORD = "Sam"
LOCOMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo"
RECALL_INDEXES = ("messages_recall_idx", "memories_recall_idx")


@dataclass
class Seeded:
    """Ids of what was loaded, by role."""

    send_users: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)  # (user id, chat id)
    users: dict[str, uuid.UUID] = field(default_factory=dict)  # the single-purpose users by name
    chats: dict[str, uuid.UUID] = field(default_factory=dict)  # "small" and "big"

    def email(self, name: str) -> str:
        """The login of a named user (or "send-<n>")."""
        return f"{name}@bench.example"


class Loader:
    """Rows gathered in memory, then copied in one go."""

    def __init__(self, hash_: str):
        self.text, self.hash = TextMaker(seed=5), hash_
        self.users, self.chats, self.messages, self.memories = [], [], [], []
        self.now = datetime.now(timezone.utc)

    def user(self, email: str) -> uuid.UUID:
        user_id = uuid.uuid4()
        self.users.append((user_id, email, self.hash))
        return user_id

    def chat(self, user_id: uuid.UUID, messages: int, *, age: timedelta = timedelta(days=30),
             said=None) -> uuid.UUID:
        """A chat of `messages` user/assistant messages spread over `age`, last active in the past month.

        The user's messages come from the iterator `said` when given, else from Zipf-distributed words.
        """
        chat_id = uuid.uuid4()
        start = self.now - timedelta(days=self.text.rng.uniform(0, 30)) - age
        step = age / max(messages, 1)
        for n in range(messages // 2):
            at = start + step * 2 * n
            content = next(said) if said is not None else self.text.sentence(4, 18)
            self.messages.append((chat_id, user_id, "user", content, at))
            self.messages.append((chat_id, user_id, "assistant", self.text.sentence(8, 30), at + step))
        self.chats.append((chat_id, user_id, f"Chat {len(self.chats)}", start, start + step * messages))
        return chat_id

    def memory(self, user_id: uuid.UUID, n: int) -> None:
        at = self.now - timedelta(days=self.text.rng.uniform(0, 365))
        self.memories.append((user_id, f"fact-{n}" if n % 2 else None, self.text.sentence(3, 12), at, at))

    def copy_into(self, conn: psycopg.Connection) -> None:
        """COPY everything, with the full-text indexes built once at the end rather than row by row."""
        definitions = dict(conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE indexname = ANY(%s)", [list(RECALL_INDEXES)]
        ).fetchall())
        for name in definitions:
            conn.execute(psycopg.sql.SQL("DROP INDEX {}").format(psycopg.sql.Identifier(name)))
        copy_rows(conn, "COPY users (id, email, password_hash) FROM STDIN", self.users)
        copy_rows(conn, "COPY chats (id, user_id, title, created_at, updated_at) FROM STDIN", self.chats)
        copy_rows(conn, "COPY messages (chat_id, user_id, role, content, created_at) FROM STDIN", self.messages)
        copy_rows(conn, "COPY memories (user_id, key, content, created_at, updated_at) FROM STDIN", self.memories)
        conn.execute("SET maintenance_work_mem = '512MB'")
        for definition in definitions.values():
            conn.execute(definition)
        conn.execute("ANALYZE")


def real_sentences() -> list[str]:
    """Every turn of the LoCoMo conversations, as "Sam: <text>" (empty when the data is not there)."""
    sentences = []
    for path in sorted(LOCOMO.glob("*.json")):
        conversation = json.loads(path.read_text())
        conversation = conversation.get("conversation", conversation)
        for key, turns in conversation.items():
            if key.startswith("session_") and isinstance(turns, list):
                sentences += [f"{COMMON_WORD}: {turn['text']}" for turn in turns]
    return sentences


def locomo_questions() -> list[str]:
    """The LoCoMo questions, asked by Sam ("Sam, when did ...?"), so the common word is in every query too."""
    questions = []
    for path in sorted(LOCOMO.glob("*.json")):
        questions += [f"{COMMON_WORD}, {qa['question']}" for qa in json.loads(path.read_text())["qa"]]
    return questions


def seed(url: str, password_hash_method: str) -> Seeded:
    """Load the benchmark's users, chats, messages and memories into the (empty, migrated) database at url."""
    seeded = Seeded()
    loader = Loader(make_hash(PASSWORD, password_hash_method))
    for n in range(SEND_USERS):
        user_id = loader.user(seeded.email(f"send-{n}"))
        seeded.send_users.append((user_id, loader.chat(user_id, SEND_CHAT_MESSAGES)))
    for name in ("pages", "chats-heavy", "chats-light", "memory-heavy", "memory-light", "memory-common"):
        seeded.users[name] = loader.user(seeded.email(name))
    seeded.chats["small"] = loader.chat(seeded.users["pages"], SMALL_CHAT_MESSAGES)
    seeded.chats["big"] = loader.chat(seeded.users["pages"], BIG_CHAT_MESSAGES, age=timedelta(days=700))
    for name, count in (("chats-heavy", HEAVY_CHATS), ("chats-light", LIGHT_CHATS)):
        for _ in range(count):
            loader.chat(seeded.users[name], 2, age=timedelta(days=loader.text.rng.uniform(1, 365)))
    for _ in range(HEAVY_MEMORY_CHATS):
        loader.chat(seeded.users["memory-heavy"], HEAVY_MEMORY_MESSAGES // HEAVY_MEMORY_CHATS,
                    age=timedelta(days=loader.text.rng.uniform(1, 365)))
    loader.chat(seeded.users["memory-light"], LIGHT_MEMORY_MESSAGES)
    sentences = real_sentences()
    if sentences:
        said = itertools.cycle(sentences)
        for _ in range(HEAVY_MEMORY_CHATS):
            loader.chat(seeded.users["memory-common"], HEAVY_MEMORY_MESSAGES // HEAVY_MEMORY_CHATS,
                        age=timedelta(days=loader.text.rng.uniform(1, 365)), said=said)
    for name, count in (("memory-heavy", HEAVY_MEMORIES), ("memory-light", LIGHT_MEMORIES)):
        for n in range(count):
            loader.memory(seeded.users[name], n)
    with psycopg.connect(url, autocommit=True) as conn:
        loader.copy_into(conn)
    return seeded
