"""Synthetic but realistically skewed data for the memory benchmark: users, chats, messages, memories.

Words follow Zipf's law over a 20,000-word vocabulary (pseudo-words plus real English words at
realistic ranks), so query terms match as many rows as they would in real chats: common words
many, rare words few. Users are skewed too: one user with 60,000 messages, nine with 20,000,
and thousands with a few dozen.
"""

import itertools
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import psycopg

VOCABULARY_SIZE = 20_000
# Real words at the Zipf rank they roughly have among content words of everyday chat.
REAL_WORDS = {
    "time": 3, "work": 5, "day": 7, "call": 12, "home": 15, "friend": 20, "car": 30, "book": 40,
    "travel": 60, "dog": 80, "cat": 120, "doctor": 150, "birthday": 200, "garden": 300,
    "sister": 350, "lisbon": 2_000, "ada": 5_000, "tabby": 9_000, "allergy": 700, "piano": 900,
}
STOPWORDS = "i my the a to and is was it of in for on me that this with what again".split()
SYLLABLES = "ka lo mi ne ru sa to vi ze ba de fo gu hi jo ku la mo nu pe ri su ta we yo".split()

HEAVY_USER_MESSAGES = 60_000
LARGE_USERS, LARGE_USER_MESSAGES = 9, 20_000
HEAVY_USER_MEMORIES = 2_000
BIG_CHAT_MESSAGES = 20_000


def build_vocabulary(rng: random.Random) -> list[str]:
    """Pseudo-words by Zipf rank, with the real words placed at their ranks."""
    words, seen = [], set(REAL_WORDS)
    while len(words) < VOCABULARY_SIZE:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    for word, rank in sorted(REAL_WORDS.items(), key=lambda item: item[1]):
        words.insert(rank - 1, word)
    return words[:VOCABULARY_SIZE]


class TextMaker:
    """Sentences of Zipf-distributed content words mixed with stopwords."""

    def __init__(self, seed: int = 7):
        self.rng = random.Random(seed)
        self.words = build_vocabulary(self.rng)
        self.cumulative = list(itertools.accumulate(1 / rank for rank in range(1, len(self.words) + 1)))

    def content_words(self, count: int) -> list[str]:
        """Content words drawn by Zipf frequency."""
        return self.rng.choices(self.words, cum_weights=self.cumulative, k=count)

    def sentence(self, low: int, high: int) -> str:
        """A sentence of low..high content words, a third as many stopwords."""
        words = self.content_words(self.rng.randint(low, high))
        for _ in range(len(words) // 3):
            words.insert(self.rng.randrange(len(words) + 1), self.rng.choice(STOPWORDS))
        return " ".join(words)

    def question(self) -> str:
        """A conversational question of 2-4 content words, as a user would ask the assistant."""
        return f"what did I say about {' and '.join(self.content_words(self.rng.randint(2, 4)))} again?"


@dataclass
class Plan:
    """How many messages each user gets; index 0 is the heavy user, the last one a light user."""

    users: int
    messages: int
    seed: int = 11
    counts: list[int] = field(init=False)

    def __post_init__(self):
        rng = random.Random(self.seed)
        fixed = [HEAVY_USER_MESSAGES] + [LARGE_USER_MESSAGES] * LARGE_USERS
        rest_users = self.users - len(fixed)
        rest_total = self.messages - sum(fixed)
        weights = [rng.paretovariate(1.6) for _ in range(rest_users)]
        scale = rest_total / sum(weights)
        rest = [max(2, int(w * scale)) // 2 * 2 for w in weights]  # whole user/assistant pairs
        rest[-1] = 40  # the "light user": a few dozen messages
        # Rounding left the total a little short; hand the missing pairs out at random.
        for _ in range((rest_total - sum(rest)) // 2):
            rest[rng.randrange(rest_users - 1)] += 2
        self.counts = fixed + rest


def seed(conn: psycopg.Connection, plan: Plan, password_hash: str, emails: list[str]) -> None:
    """Load the plan's users, chats, messages and memories with COPY (the recall indexes rebuilt after)."""
    text = TextMaker()
    now = datetime.now(timezone.utc)
    recall_indexes = dict(conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE indexname IN ('messages_recall_idx', 'memories_recall_idx')"
    ).fetchall())
    for name in recall_indexes:
        conn.execute(f"DROP INDEX {name}")
    user_ids = [uuid.uuid4() for _ in plan.counts]
    copy_rows(conn, "COPY users (id, email, password_hash) FROM STDIN",
          [(user_id, email, password_hash) for user_id, email in zip(user_ids, emails)])
    chat_rows, message_rows = [], []
    for user_id, count in zip(user_ids, plan.counts):
        remaining = count
        while remaining > 0:
            # The heavy user's first chat is a long one: 20,000 messages.
            usual = text.rng.randint(20, 300) // 2 * 2
            size = min(remaining, BIG_CHAT_MESSAGES if remaining == HEAVY_USER_MESSAGES else usual)
            chat_id = uuid.uuid4()
            step = timedelta(days=1) * min(1.0, 300 / size)  # long chats stretch over months
            start = now - timedelta(days=text.rng.uniform(1, 365)) - step * (size // 2)
            at = start
            for _ in range(size // 2):
                message_rows.append((chat_id, user_id, "user", text.sentence(4, 18), at))
                message_rows.append((chat_id, user_id, "assistant", text.sentence(8, 30), at + timedelta(seconds=2)))
                at += step
            chat_rows.append((chat_id, user_id, f"Chat {len(chat_rows)}", start, min(at, now)))
            remaining -= size
    copy_rows(conn, "COPY chats (id, user_id, title, created_at, updated_at) FROM STDIN", chat_rows)
    copy_rows(conn, "COPY messages (chat_id, user_id, role, content, created_at) FROM STDIN", message_rows)
    memory_rows = []
    for index, user_id in enumerate(user_ids):
        count = HEAVY_USER_MEMORIES if index == 0 else text.rng.randint(0, 20)
        for n in range(count):
            at = now - timedelta(days=text.rng.uniform(0, 365))
            memory_rows.append((user_id, f"fact-{n}" if n % 2 else None, text.sentence(3, 12), at, at))
    copy_rows(conn, "COPY memories (user_id, key, content, created_at, updated_at) FROM STDIN", memory_rows)
    conn.execute("SET maintenance_work_mem = '512MB'")
    for definition in recall_indexes.values():
        conn.execute(definition)


def copy_rows(conn: psycopg.Connection, statement: str, rows: list[tuple]) -> None:
    """Load rows with one COPY statement."""
    with conn.cursor().copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
