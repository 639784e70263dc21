"""Queries longer than psycopg's 4 kB parse cache run in PostgreSQL's own $n form, converted once."""

import psycopg

from conftest import send
from memlayer.storage.db import NativeQuery, native, sql


def test_named_placeholders_become_numbered_as_psycopg_numbers_them():
    query = NativeQuery("SELECT %(b)s, %(a)s, %(b)s || '%%' WHERE x LIKE 'y%%'")

    assert query.sql == "SELECT $1, $2, $1 || '%' WHERE x LIKE 'y%'"
    assert query.names == ["b", "a"]


def test_a_native_query_answers_what_the_named_one_does(db):
    text = "SELECT %(word)s::text || '%%' AS marked, %(n)s::int + %(n)s::int AS twice"
    params = {"word": "fifty", "n": 21}
    with psycopg.Connection.connect(db.info.dsn, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        named = conn.execute(text, params).fetchall()
        numbered = NativeQuery(text).fetch_all(conn, params)
    assert numbered == named == [{"marked": "fifty%", "twice": 42}]


def test_a_send_runs_recall_in_its_native_form(client, user, chat, monkeypatch):
    ran = []
    real_execute = psycopg.RawCursor.execute

    def execute(self, query, *args, **kwargs):
        ran.append(query)
        return real_execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.RawCursor, "execute", execute)

    send(client, user, chat["id"], "what about lisbon")

    assert len(sql.memories.recall.sql) > 4096  # why: psycopg would parse it again on every run
    assert ran == [native(sql.memories.recall).sql]
