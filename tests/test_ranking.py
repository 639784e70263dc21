"""Ranking: BM25 with per-user document frequencies, context from neighbouring turns, and a bounded cost."""

import re

import pytest
from psycopg.rows import dict_row

from conftest import explain_generic, new_chat, new_user, search, send
from memlayer.memory.recall import recall
from memlayer.storage.db import sql


def contents(items: list[dict]) -> list[str]:
    """The texts of search results, in order."""
    return [item["content"] for item in items]


def test_the_rarer_shared_word_ranks_first(client, user, chat):
    send(client, user, chat["id"], "the piano tuner came by")  # the oldest: recency cannot be what lifts it
    for n in range(6):
        send(client, user, chat["id"], f"the garden was lovely on day {n}")
    send(client, user, chat["id"], "my garden gnome is broken")

    items = search(client, user, "who tunes the piano in the garden?")

    # "garden" is in seven messages, "piano" in one: the piano message wins although each shares one word.
    assert contents(items)[0] == "the piano tuner came by"


def test_a_word_in_every_message_does_not_decide_the_order(client, user, chat):
    send(client, user, chat["id"], "Caroline: I adopted a puppy from the shelter near the old station downtown")
    send(client, user, chat["id"], "Caroline: the weather was fine")
    send(client, user, chat["id"], "Caroline: Caroline, Caroline!")

    items = search(client, user, "Caroline puppy")

    # Counted without inverse document frequency, the short message that repeats the name would win.
    assert contents(items)[0].startswith("Caroline: I adopted a puppy")


def test_an_exact_old_match_is_not_buried_by_recent_weak_ones(client, user, chat, db):
    send(client, user, chat["id"], "my sister Lucia moved to Porto")
    for n in range(5):
        send(client, user, chat["id"], f"my sister called again {n}")
    db.execute("UPDATE messages SET created_at = now() - interval '3 years' WHERE content LIKE '%Lucia%'")

    items = search(client, user, "where did my sister Lucia move?")

    assert contents(items)[0] == "my sister Lucia moved to Porto"


def test_a_turn_next_to_a_strong_match_outranks_an_equal_one_elsewhere(client, user, db):
    talk, elsewhere = new_chat(client, user, "talk"), new_chat(client, user, "elsewhere")
    send(client, user, elsewhere["id"], "I read a book about ships last year")
    send(client, user, talk["id"], "what book did you read during the holidays on the beach?")
    send(client, user, talk["id"], "a book about trains")

    items = search(client, user, "which book did I read on the holidays at the beach?")

    # On its own words "ships" matches better ("book" and "read"); "trains" comes right after the turn
    # that holds the question's words, and takes part of its score.
    assert contents(items) == ["what book did you read during the holidays on the beach?",
                               "a book about trains", "I read a book about ships last year"]


def test_neighbours_that_share_no_word_are_not_recalled(client, user, chat):
    send(client, user, chat["id"], "my cat is called Ada")
    send(client, user, chat["id"], "the weather is nice")

    assert contents(search(client, user, "what is my cat called?")) == ["my cat is called Ada"]


def recount(conn, user_id) -> tuple[dict, tuple]:
    """The user's term statistics computed from scratch: ({lexeme: documents}, (documents, lexemes))."""
    items = """SELECT search_vector FROM messages WHERE user_id = %(u)s AND role = 'user'
               UNION ALL SELECT search_vector FROM memories WHERE user_id = %(u)s"""
    terms = dict(conn.execute(f"SELECT lexeme, count(*) FROM ({items}) AS i, unnest(tsvector_to_array(i.search_vector))"
                              " AS lexeme GROUP BY lexeme", {"u": user_id}).fetchall())
    totals = conn.execute(f"SELECT count(*), coalesce(sum(length(search_vector)), 0) FROM ({items}) AS i",
                          {"u": user_id}).fetchone()
    return terms, tuple(totals)


def stored(conn, user_id) -> tuple[dict, tuple]:
    """The user's term statistics as the triggers kept them (terms no item holds any more left out)."""
    terms = dict(conn.execute("SELECT lexeme, documents FROM recall_terms WHERE user_id = %s AND documents > 0",
                              [user_id]).fetchall())
    totals = conn.execute("SELECT documents, lexemes FROM recall_totals WHERE user_id = %s", [user_id]).fetchone()
    return terms, tuple(totals) if totals else (0, 0)


def test_statistics_follow_every_write(client, user, chat, db):
    user_id = client.get("/auth/me", headers=user["headers"]).get_json()["id"]
    send(client, user, chat["id"], "my cat is called Ada")
    send(client, user, chat["id"], "the cat sleeps all day, the cat")
    memory = client.post("/memories", json={"key": "pet", "content": "User's cat Ada is a tabby"},
                         headers=user["headers"]).get_json()
    client.post("/memories", json={"content": "User plays the piano"}, headers=user["headers"])
    assert stored(db, user_id) == recount(db, user_id)
    assert stored(db, user_id)[0]["cat"] == 3  # documents, not occurrences; assistant replies do not count

    client.patch(f"/memories/{memory['id']}", json={"content": "User's dog Rex is a terrier"}, headers=user["headers"])
    client.post("/memories", json={"key": "pet", "content": "User's parrot talks"}, headers=user["headers"])
    assert stored(db, user_id) == recount(db, user_id)

    client.delete(f"/memories/{memory['id']}", headers=user["headers"])
    assert stored(db, user_id) == recount(db, user_id)
    client.delete("/memories", headers=user["headers"])
    assert stored(db, user_id) == recount(db, user_id)

    other = new_user(client)
    send(client, other, new_chat(client, other)["id"], "cat cat cat")
    assert stored(db, user_id) == recount(db, user_id)  # another user's words are not this user's


@pytest.fixture
def crowded(app_factory, db):
    """A user with 3,000 messages that all say "cat", of which 40 also say "tabby"; returns the user's id."""
    user_id = db.execute("INSERT INTO users (email, password_hash) VALUES ('crowded@example.com', 'x') RETURNING id"
                         ).fetchone()[0]
    chat_id = db.execute("INSERT INTO chats (user_id, title) VALUES (%s, 'cats') RETURNING id", [user_id]).fetchone()[0]
    db.execute("""
        INSERT INTO messages (chat_id, user_id, role, content)
        SELECT %(c)s, %(u)s, CASE WHEN n %% 2 = 0 THEN 'user' ELSE 'assistant' END,
               'the cat ' || CASE WHEN n %% 150 = 0 THEN 'tabby ' ELSE '' END || 'number ' || n
        FROM generate_series(1, 6000) AS n
    """, {"c": chat_id, "u": user_id})
    db.execute("ANALYZE messages")
    return user_id


def recall_plan(database_url, user_id, text: str) -> str:
    """EXPLAIN (ANALYZE) of one recall with the generic plan its prepared statement settles on."""
    return explain_generic(database_url, sql.memories.recall, {
        "user_id": user_id, "text": text, "window_chat_id": None, "window_start_seq": None, "limit": 5,
        "model": None, "embedding": None}, analyze=True)


def rows_read_from_messages(plan: str) -> int:
    """Rows all scans of the messages table returned: the candidates, then the neighbours of the best 30."""
    scans = re.findall(r"(?:Bitmap Heap Scan|Index Scan|Index Scan Backward|Seq Scan) (?:using \w+ )?on messages m(?:_\d+)? "
                       r".*?actual rows=([\d.]+) loops=(\d+)", plan)
    assert scans, plan
    return sum(round(float(rows) * int(loops)) for rows, loops in scans)


def test_a_word_in_thousands_of_messages_reads_a_bounded_number_of_rows(database_url, crowded):
    plan = recall_plan(database_url, crowded, "tell me about the cat")

    assert rows_read_from_messages(plan) <= 250 + 2 * 30, plan


def test_a_rare_word_leads_and_the_common_one_only_scores(database_url, db, crowded):
    plan = recall_plan(database_url, crowded, "which cat is the tabby?")

    # The 40 messages that say "tabby" are the candidates (and their neighbours); the 3,000 "cat" ones are not read.
    assert rows_read_from_messages(plan) <= 40 + 2 * 30, plan
    db.row_factory = dict_row
    rows = recall(db, user_id=crowded, text="which cat is the tabby?", limit=5)
    assert len(rows) == 5 and all("tabby" in row["content"] for row in rows)
