"""Memories that write themselves: a job per exchange, run by the worker, the fake model scripting the answers."""

import json
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from conftest import LLM_MODEL, new_user, through_pooler
from fake_provider import Hang, Reply, Status
from memlayer.assistant.worker import claim_job, run_due_jobs, run_job
from memlayer.web.schemas import MAX_MEMORY_LENGTH


def operations(*ops) -> Reply:
    """The model's structured answer."""
    return Reply(json.dumps({"operations": list(ops)}), usage={"prompt_tokens": 120, "completion_tokens": 30})


def add(content):
    return {"op": "add", "id": None, "content": content}


def send(client, user, chat_id, content, status=201):
    response = client.post(f"/chats/{chat_id}/messages", json={"content": content}, headers=user["headers"])
    assert response.status_code == status, response.get_json()
    return response.get_json()


@pytest.fixture
def talker(llm_client):
    """A user with a chat answered by the fake model."""
    user = new_user(llm_client)
    chat = llm_client.post("/chats", json={"title": "Life"}, headers=user["headers"]).get_json()
    return {**user, "chat_id": chat["id"]}


def memories_of(client, user) -> list[dict]:
    return client.get("/memories", headers=user["headers"]).get_json()


def jobs(db) -> list[dict]:
    with db.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        return cursor.execute("SELECT * FROM memory_jobs ORDER BY id").fetchall()


def user_message_id(db, chat_id) -> str:
    return db.execute("SELECT id FROM messages WHERE chat_id = %s AND role = 'user' ORDER BY seq DESC LIMIT 1",
                      [chat_id]).fetchone()[0]


def test_each_exchange_queues_one_job_in_its_transaction(llm_client, talker, db):
    send(llm_client, talker, talker["chat_id"], "My sister is called Lucia.")
    [job] = jobs(db)
    assert job["state"] == "queued" and job["attempts"] == 0
    assert job["message_id"] == user_message_id(db, talker["chat_id"])


def test_a_send_that_fails_after_storing_leaves_no_job(llm_client, talker, db, monkeypatch):
    # With an Idempotency-Key the answer is recorded in the store's transaction; failing there undoes the job too.
    from memlayer.web import idempotency

    def broken(*args, **kwargs):
        raise RuntimeError("injected after the writes")

    monkeypatch.setattr(idempotency, "respond", broken)
    response = llm_client.post(f"/chats/{talker['chat_id']}/messages", json={"content": "My sister is Lucia."},
                               headers={**talker["headers"], "Idempotency-Key": "lucia"})
    assert response.status_code == 500
    assert jobs(db) == []
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0


def test_the_job_is_queued_by_the_statement_that_stores_the_pair(llm_client, talker, db):
    # Without a key the store is one statement in autocommit: a job that cannot be queued stores nothing.
    db.execute("""
        CREATE FUNCTION fail_job_insert() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'injected by test'; END $$;
        CREATE TRIGGER fail_job_insert BEFORE INSERT ON memory_jobs
        FOR EACH ROW EXECUTE FUNCTION fail_job_insert();
    """)
    try:
        send(llm_client, talker, talker["chat_id"], "My sister is called Lucia.", status=500)
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM monthly_usage").fetchone()[0] == 0
    finally:
        db.execute("DROP TRIGGER fail_job_insert ON memory_jobs; DROP FUNCTION fail_job_insert()")
    send(llm_client, talker, talker["chat_id"], "My sister is called Lucia.")
    assert len(jobs(db)) == 1


def test_add_update_and_delete_as_the_model_says_with_the_source_in_the_history(llm_app, llm_client, talker,
                                                                                 provider, db):
    provider.script(Reply("Nice!"), operations(add("User's sister is called Lucia")))
    send(llm_client, talker, talker["chat_id"], "My sister is called Lucia.")
    assert run_due_jobs(llm_app) == ["applied 1"]
    [learned] = memories_of(llm_client, talker)
    assert learned["content"] == "User's sister is called Lucia"
    taught_by = user_message_id(db, talker["chat_id"])
    history = llm_client.get(f"/memories/{learned['id']}/history", headers=talker["headers"]).get_json()
    assert [(e["event"], e["source"], e["message_id"]) for e in history] == [("created", "extraction", str(taught_by))]

    # The model sees the memory under a short id, and asked for the memory_operations structure.
    provider.script(Reply("Porto is lovely."),
                    operations({"op": "update", "id": "m1", "content": "User's sister Lucia moved to Porto"}))
    send(llm_client, talker, talker["chat_id"], "Lucia moved to Porto last week.")
    assert run_due_jobs(llm_app) == ["applied 1"]
    asked = provider.requests[-1]["body"]
    assert asked["response_format"]["json_schema"]["name"] == "memory_operations"
    assert "m1: User's sister is called Lucia" in asked["messages"][-1]["content"]
    assert "Lucia moved to Porto last week." in asked["messages"][-1]["content"]
    [updated] = memories_of(llm_client, talker)
    assert updated["id"] == learned["id"] and updated["content"] == "User's sister Lucia moved to Porto"
    history = llm_client.get(f"/memories/{learned['id']}/history", headers=talker["headers"]).get_json()
    assert [(e["event"], e["source"]) for e in history] == [("created", "extraction"), ("updated", "extraction")]
    assert history[1]["message_id"] == str(user_message_id(db, talker["chat_id"]))

    provider.script(Reply("I see."), operations({"op": "delete", "id": "m1", "content": None}))
    send(llm_client, talker, talker["chat_id"], "Actually Lucia is not my sister any more, she is my cousin.")
    assert run_due_jobs(llm_app) == ["applied 1"]
    assert memories_of(llm_client, talker) == []


@pytest.mark.parametrize("answer", [
    "not json at all",
    json.dumps({"operations": "add a memory"}),
    json.dumps({"ops": [add("User likes tea")]}),
    json.dumps({"operations": [{"op": "update", "id": "m7", "content": "User likes tea"}]}),
    json.dumps({"operations": [{"op": "delete", "id": None, "content": None}]}),
    json.dumps({"operations": [{"op": "merge", "id": None, "content": "User likes tea"}]}),
    json.dumps({"operations": [add("x" * (MAX_MEMORY_LENGTH + 1))]}),
    json.dumps({"operations": [add("   ")]}),
], ids=["not-json", "not-a-list", "wrong-key", "unknown-id", "delete-without-id", "unknown-op", "oversize", "blank"])
def test_a_malformed_answer_applies_nothing_and_the_send_is_unaffected(llm_app, llm_client, talker, provider, db,
                                                                       answer, caplog):
    kept = llm_client.post("/memories", json={"content": "User likes coffee"}, headers=talker["headers"]).get_json()
    provider.script(Reply("Sure."), Reply(answer))
    reply = send(llm_client, talker, talker["chat_id"], "I drink tea these days, a secret-word-in-the-message.")
    assert reply["content"] == "Sure."
    assert run_due_jobs(llm_app) == ["applied 0"]
    assert [m["content"] for m in memories_of(llm_client, talker)] == [kept["content"]]
    assert [job["state"] for job in jobs(db)] == ["done"]
    assert "secret-word-in-the-message" not in caplog.text and "x" * 50 not in caplog.text


def test_another_users_memory_id_is_never_touched(llm_app, llm_client, talker, provider):
    other = new_user(llm_client)
    theirs = llm_client.post("/memories", json={"content": "Other user's fact"}, headers=other["headers"]).get_json()
    provider.script(Reply("Ok."), operations({"op": "update", "id": theirs["id"], "content": "Hijacked"},
                                             {"op": "delete", "id": theirs["id"], "content": None}))
    send(llm_client, talker, talker["chat_id"], "Hello there.")
    assert run_due_jobs(llm_app) == ["applied 0"]
    assert [m["content"] for m in memories_of(llm_client, other)] == ["Other user's fact"]


def test_valid_operations_apply_beside_dropped_ones(llm_app, llm_client, talker, provider):
    provider.script(Reply("Ok."), operations(add("User has a cat called Ada"), {"op": "update", "id": "m4",
                                                                               "content": "nope"}))
    send(llm_client, talker, talker["chat_id"], "My cat is called Ada.")
    assert run_due_jobs(llm_app) == ["applied 1"]
    assert [m["content"] for m in memories_of(llm_client, talker)] == ["User has a cat called Ada"]


def test_a_lapsed_claim_applies_nothing_and_a_finished_job_never_runs_again(llm_app, llm_client, talker, provider, db):
    provider.script(Reply("Ok."), operations(add("User has a cat called Ada")),
                    operations(add("User has a cat called Ada")))
    send(llm_client, talker, talker["chat_id"], "My cat is called Ada.")
    first = claim_job(llm_app)
    db.execute("UPDATE memory_jobs SET lease_until = now() - interval '1 second'")  # its worker seems dead
    second = claim_job(llm_app)
    assert second.id == first.id and second.attempts == 2
    assert run_job(llm_app, first) == "claim lapsed"
    assert run_job(llm_app, second) == "applied 1"
    assert claim_job(llm_app) is None
    assert [m["content"] for m in memories_of(llm_client, talker)] == ["User has a cat called Ada"]


def test_the_provider_down_is_retried_with_backoff_then_given_up(app_factory, provider, llm_client, talker, db,
                                                                 database_url):
    from memlayer.assistant.catalog import seed_models

    app = app_factory(LLM_BASE_URL=provider.url, LLM_MODEL=LLM_MODEL, LLM_TIMEOUT=1.0, JOB_MAX_ATTEMPTS=2)
    with psycopg.connect(database_url, autocommit=True) as conn:
        seed_models(conn, app.config)
    responder = app.extensions["memlayer.assistant.responders"]["openai"]
    responder.sleep = lambda seconds: None
    send(llm_client, talker, talker["chat_id"], "My cat is called Ada.")
    provider.default = Status(503)
    assert run_due_jobs(app) == ["ProviderFailed"]
    [job] = jobs(db)
    assert job["state"] == "queued" and job["attempts"] == 1 and job["run_at"] > job["created_at"]
    assert claim_job(app) is None  # not before its backoff
    db.execute("UPDATE memory_jobs SET run_at = now()")
    assert run_due_jobs(app) == ["ProviderFailed"]
    [job] = jobs(db)
    assert job["state"] == "failed" and job["attempts"] == 2 and job["outcome"] == "ProviderFailed"
    db.execute("UPDATE memory_jobs SET run_at = now()")
    assert run_due_jobs(app) == []
    provider.default = Reply()
    send(llm_client, talker, talker["chat_id"], "Sends go on meanwhile.")


def test_a_user_can_turn_extraction_off_for_themselves(llm_client, talker, db):
    assert llm_client.get("/auth/me", headers=talker["headers"]).get_json()["memory_extraction"] is True
    response = llm_client.patch("/auth/me", json={"memory_extraction": False}, headers=talker["headers"])
    assert response.status_code == 200 and response.get_json()["memory_extraction"] is False
    assert llm_client.get("/auth/me", headers=talker["headers"]).get_json()["memory_extraction"] is False
    send(llm_client, talker, talker["chat_id"], "My sister is called Lucia.")
    assert jobs(db) == []


@pytest.mark.parametrize("body", [{}, {"memory_extraction": "no"}, {"memory_extraction": 0}, {"email": "x@y.z"}])
def test_a_bad_settings_change_is_422_and_changes_nothing(llm_client, talker, body):
    response = llm_client.patch("/auth/me", json=body, headers=talker["headers"])
    assert response.status_code == 422, response.get_json()
    assert llm_client.get("/auth/me", headers=talker["headers"]).get_json()["memory_extraction"] is True


def test_extraction_off_and_the_offline_model_queue_nothing(app_factory, provider, db, database_url):
    off = app_factory(LLM_BASE_URL=provider.url, LLM_MODEL=LLM_MODEL, MEMORY_EXTRACTION="off").test_client()
    user = new_user(off)
    chat = off.post("/chats", json={}, headers=user["headers"]).get_json()
    send(off, user, chat["id"], "My sister is called Lucia.")
    offline = app_factory().test_client()  # no provider: the offline responder answers, and extracts nothing
    user = new_user(offline)
    chat = offline.post("/chats", json={}, headers=user["headers"]).get_json()
    send(offline, user, chat["id"], "My sister is called Lucia.")
    assert jobs(db) == []


def test_a_user_over_quota_gets_no_extraction_and_no_model_call(app_factory, provider, db, database_url):
    from memlayer.assistant.catalog import seed_models

    app = app_factory(LLM_BASE_URL=provider.url, LLM_MODEL=LLM_MODEL, MONTHLY_TOKEN_QUOTA=18)
    with psycopg.connect(database_url, autocommit=True) as conn:
        seed_models(conn, app.config)
    client = app.test_client()
    user = new_user(client)
    chat = client.post("/chats", json={}, headers=user["headers"]).get_json()
    send(client, user, chat["id"], "My sister is called Lucia.")  # 18 tokens: the quota is used up
    asked = len(provider.requests)
    assert run_due_jobs(app) == ["over quota"]
    assert len(provider.requests) == asked


def test_extraction_tokens_are_billed_and_counted_in_the_quota(llm_app, llm_client, talker, provider, db):
    provider.script(Reply("Nice!"), operations(add("User's sister is called Lucia")))
    send(llm_client, talker, talker["chat_id"], "My sister is called Lucia.")
    run_due_jobs(llm_app)
    usage = llm_client.get("/usage", headers=talker["headers"]).get_json()
    assert usage["memory"] == {"extractions": 1, "prompt_tokens": 120, "completion_tokens": 30,
                               "total_tokens": 150, "cost": 0.0}
    assert usage["total"]["total_tokens"] == 18  # replies alone
    charged = db.execute("SELECT tokens FROM monthly_usage").fetchone()[0]
    assert charged == 18 + 150


def test_a_deleted_chat_or_a_deleted_memory_wins_over_a_late_job(llm_app, llm_client, talker, provider, db):
    provider.script(Reply("Ok."))
    send(llm_client, talker, talker["chat_id"], "My cat is called Ada.")
    assert llm_client.delete(f"/chats/{talker['chat_id']}", headers=talker["headers"]).status_code == 204
    asked = len(provider.requests)
    assert run_due_jobs(llm_app) == ["gone"]
    assert len(provider.requests) == asked and memories_of(llm_client, talker) == []

    chat = llm_client.post("/chats", json={}, headers=talker["headers"]).get_json()
    provider.script(Reply("Ok."), operations(add("User has a cat called Ada")))
    send(llm_client, talker, chat["id"], "My cat is called Ada.")
    saved = llm_client.post("/memories", json={"content": "User has a cat called Ada"}, headers=talker["headers"])
    # The user removes it before the job of the older message runs: it must not come back.
    assert llm_client.delete(f"/memories/{saved.get_json()['id']}", headers=talker["headers"]).status_code == 204
    assert run_due_jobs(llm_app) == ["applied 0, 1 adds skipped (memories deleted since)"]
    assert memories_of(llm_client, talker) == []


def test_deleting_the_account_with_jobs_queued_leaves_no_row_of_it(llm_app, llm_client, talker, provider, db):
    provider.script(Reply("Ok."), operations(add("User's sister is called Lucia")), Reply("Ok."))
    send(llm_client, talker, talker["chat_id"], "My sister is called Lucia.")
    run_due_jobs(llm_app)
    send(llm_client, talker, talker["chat_id"], "And my brother is Tomas.")  # queued, not run
    user_id = db.execute("SELECT id FROM users WHERE email = %s", [talker["email"]]).fetchone()[0]
    assert llm_client.delete("/auth/me", headers=talker["headers"]).status_code == 204
    tables = db.execute("SELECT table_name FROM information_schema.columns "
                        "WHERE column_name = 'user_id' AND table_schema = 'public'").fetchall()
    left = {table: db.execute(f"SELECT count(*) FROM {table} WHERE user_id = %s", [user_id]).fetchone()[0]
            for (table,) in tables}
    assert "memory_jobs" in left and "memory_usage" in left
    assert set(left.values()) == {0}, left
    assert run_due_jobs(llm_app) == []


@pytest.mark.slow
def test_a_worker_killed_mid_job_leaves_it_to_the_next_and_the_memory_is_written_once(
        llm_app, llm_client, talker, provider, db, database_url):
    provider.script(Reply("Ok."), Hang(20), operations(add("User has a cat called Ada")))
    send(llm_client, talker, talker["chat_id"], "My cat is called Ada.")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMLAYER_")}
    env.update({"MEMLAYER_DATABASE_URL": through_pooler(database_url), "MEMLAYER_LLM_BASE_URL": provider.url,
                "MEMLAYER_LLM_MODEL": LLM_MODEL, "MEMLAYER_LLM_TIMEOUT": "30", "MEMLAYER_JOB_LEASE_SECONDS": "2",
                "MEMLAYER_JOB_POLL_SECONDS": "0.1"})
    if os.environ.get("MEMLAYER_PREPARE_THRESHOLD"):
        env["MEMLAYER_PREPARE_THRESHOLD"] = os.environ["MEMLAYER_PREPARE_THRESHOLD"]
    worker = subprocess.Popen([sys.executable, "-m", "memlayer", "worker", "--threads", "1"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert provider.wait_for(lambda: provider.in_flight == 1, timeout=20), "the worker never asked the model"
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    [job] = jobs(db)
    assert job["state"] == "running" and job["attempts"] == 1
    time.sleep(2.2)  # the dead worker's lease runs out
    assert run_due_jobs(llm_app) == ["applied 1"]
    [job] = jobs(db)
    assert job["state"] == "done" and job["attempts"] == 2
    assert [m["content"] for m in memories_of(llm_client, talker)] == ["User has a cat called Ada"]


@pytest.mark.slow
def test_the_worker_stops_on_sigterm_after_its_running_job(llm_client, talker, provider, db, database_url):
    provider.script(Reply("Ok."), operations(add("User has a cat called Ada")))
    provider.pause()
    send_thread_result = {}

    import threading

    def sender():
        send_thread_result["reply"] = send(llm_client, talker, talker["chat_id"], "My cat is called Ada.")

    sending = threading.Thread(target=sender)
    sending.start()
    assert provider.wait_for(lambda: provider.in_flight == 1)
    provider.resume()
    sending.join()
    provider.pause()  # the extraction call waits until resumed
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMLAYER_")}
    env.update({"MEMLAYER_DATABASE_URL": through_pooler(database_url), "MEMLAYER_LLM_BASE_URL": provider.url,
                "MEMLAYER_LLM_MODEL": LLM_MODEL, "MEMLAYER_JOB_POLL_SECONDS": "0.1"})
    if os.environ.get("MEMLAYER_PREPARE_THRESHOLD"):
        env["MEMLAYER_PREPARE_THRESHOLD"] = os.environ["MEMLAYER_PREPARE_THRESHOLD"]
    worker = subprocess.Popen([sys.executable, "-m", "memlayer", "worker", "--threads", "2"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert provider.wait_for(lambda: provider.in_flight == 1, timeout=20)
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert worker.poll() is None  # still finishing its job
        provider.resume()
        assert worker.wait(timeout=15) == 0
    finally:
        provider.resume()
        if worker.poll() is None:
            worker.kill()
    assert [job["state"] for job in jobs(db)] == ["done"]
    assert [m["content"] for m in memories_of(llm_client, talker)] == ["User has a cat called Ada"]
