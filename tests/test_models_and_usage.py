"""Models per chat, usage per reply and per model, and the monthly token quota under concurrency."""

from datetime import datetime, timezone

import psycopg
import pytest
from click.testing import CliRunner

from conftest import LLM_MODEL, count_rows, new_chat, new_user, run_together, send
from memlayer import cli, config
from memlayer.assistant import quota
from memlayer.assistant.catalog import seed_models
from memlayer.config import ConfigError

TOKENS_PER_SEND = 11 + 7  # the fake provider's usage


def add_model(db, name, provider="openai", enabled=True, input_price=0, output_price=0):
    db.execute("INSERT INTO models (name, provider, context_window, input_price_per_million, output_price_per_million,"
               " is_enabled) VALUES (%s, %s, 8192, %s, %s, %s)", [name, provider, input_price, output_price, enabled])


def test_models_lists_the_enabled_ones_this_service_can_use(llm_client, db):
    add_model(db, "big-model", input_price=2.5, output_price=10)
    add_model(db, "retired-model", enabled=False)
    user = new_user(llm_client)

    models = llm_client.get("/models", headers=user["headers"]).get_json()

    assert [m["name"] for m in models] == ["big-model", LLM_MODEL, "offline"]
    assert {m["name"]: m["is_default"] for m in models} == {"big-model": False, LLM_MODEL: True, "offline": False}
    big = models[0]
    assert big["provider"] == "openai" and big["context_window"] == 8192
    assert big["input_price_per_million"] == 2.5 and big["output_price_per_million"] == 10


def test_without_a_provider_only_the_offline_model_is_offered(client, user, db):
    add_model(db, "needs-a-provider")
    models = client.get("/models", headers=user["headers"]).get_json()
    assert [(m["name"], m["is_default"]) for m in models] == [("offline", True)]
    response = client.post("/chats", json={"model": "needs-a-provider"}, headers=user["headers"])
    assert response.status_code == 422


def test_a_chat_uses_the_model_it_chose(llm_client, provider, db):
    add_model(db, "big-model")
    user = new_user(llm_client)
    created = llm_client.post("/chats", json={"title": "t", "model": "big-model"}, headers=user["headers"])
    assert created.status_code == 201 and created.get_json()["model"] == "big-model"
    chat = created.get_json()

    reply = send(llm_client, user, chat["id"], "hello")
    assert provider.requests[-1]["body"]["model"] == "big-model" and reply["model"] == "big-model"

    changed = llm_client.patch(f"/chats/{chat['id']}", json={"model": "offline"}, headers=user["headers"])
    assert changed.status_code == 200 and changed.get_json()["model"] == "offline"
    assert changed.get_json()["title"] == "t"  # untouched
    reply = send(llm_client, user, chat["id"], "hello again")
    assert reply["model"] == "offline" and "No language model answers this chat" in reply["content"]
    assert len(provider.requests) == 1

    reset = llm_client.patch(f"/chats/{chat['id']}", json={"model": None}, headers=user["headers"])
    assert reset.get_json()["model"] is None
    assert send(llm_client, user, chat["id"], "and again")["model"] == LLM_MODEL


@pytest.mark.parametrize("body", [{"model": "no-such-model"}, {"model": "retired-model"}, {"model": ""}, {"model": 3},
                                  {"model": "x" * 201}])
def test_unknown_or_disabled_models_are_refused(llm_client, db, body):
    add_model(db, "retired-model", enabled=False)
    user = new_user(llm_client)
    created = llm_client.post("/chats", json=body, headers=user["headers"])
    assert created.status_code == 422 and "model" in created.get_json()["errors"]
    chat = new_chat(llm_client, user)
    patched = llm_client.patch(f"/chats/{chat['id']}", json=body, headers=user["headers"])
    assert patched.status_code == 422
    assert count_rows(db, "chats") == 1
    assert db.execute("SELECT model FROM chats").fetchone()[0] is None


def test_patch_needs_a_change(client, user, chat):
    response = client.patch(f"/chats/{chat['id']}", json={}, headers=user["headers"])
    assert response.status_code == 422


def test_a_chat_whose_model_was_disabled_must_choose_again(llm_client, provider, db):
    add_model(db, "big-model")
    user = new_user(llm_client)
    chat = llm_client.post("/chats", json={"model": "big-model"}, headers=user["headers"]).get_json()
    db.execute("UPDATE models SET is_enabled = false WHERE name = 'big-model'")

    response = llm_client.post(f"/chats/{chat['id']}/messages", json={"content": "hi"}, headers=user["headers"])

    assert response.status_code == 409 and "big-model" in response.get_json()["detail"]
    assert provider.requests == [] and count_rows(db, "messages") == 0


def test_usage_totals_by_model_and_time_range(llm_client, provider, db):
    add_model(db, "big-model", input_price=1, output_price=2)
    user, other = new_user(llm_client), new_user(llm_client)
    big = llm_client.post("/chats", json={"model": "big-model"}, headers=user["headers"]).get_json()
    default = new_chat(llm_client, user)
    for chat in (big, big, default):
        send(llm_client, user, chat["id"], "hello")
    send(llm_client, other, new_chat(llm_client, other)["id"], "not mine")

    usage = llm_client.get("/usage", headers=user["headers"]).get_json()

    by_model = {row["model"]: row for row in usage["models"]}
    assert set(by_model) == {"big-model", LLM_MODEL}
    assert by_model["big-model"] == {"model": "big-model", "messages": 2, "prompt_tokens": 22, "completion_tokens": 14,
                                     "total_tokens": 36, "cost": pytest.approx((22 * 1 + 14 * 2) / 1e6)}
    assert usage["total"]["messages"] == 3 and usage["total"]["total_tokens"] == 3 * TOKENS_PER_SEND
    assert usage["quota"] is None
    assert datetime.fromisoformat(usage["from"]) == quota.period_start(datetime.now(timezone.utc))

    future = llm_client.get("/usage", query_string={"from": "2999-01-01", "to": "2999-02-01"}, headers=user["headers"])
    assert future.status_code == 200 and future.get_json()["models"] == [] and future.get_json()["total"]["messages"] == 0
    everything = llm_client.get("/usage", query_string={"from": "2000-01-01"}, headers=user["headers"]).get_json()
    assert everything["total"]["messages"] == 3


@pytest.mark.parametrize("params", [{"from": "yesterday"}, {"from": "2026-13-01"}, {"to": "2000-01-01"},
                                    {"from": "2026-02-01", "to": "2026-01-01"}])
def test_bad_usage_ranges_are_422(client, user, params):
    response = client.get("/usage", query_string=params, headers=user["headers"])
    assert response.status_code == 422 and response.get_json()["detail"].startswith("Invalid input")


def test_the_quota_holds_exactly_under_twenty_concurrent_sends(app_factory, provider, database_url, db):
    app = app_factory(LLM_BASE_URL=provider.url, LLM_MODEL=LLM_MODEL, LLM_TIMEOUT=10.0,
                      MONTHLY_TOKEN_QUOTA=5 * TOKENS_PER_SEND)
    with psycopg.connect(database_url, autocommit=True) as conn:
        seed_models(conn, app.config)
    client = app.test_client()
    user = new_user(client)
    chats = [new_chat(client, user, f"chat {i}") for i in range(20)]
    provider.gather(20)  # every send has passed the quota check and reached the model before any is stored
    touched_at = dict(db.execute("SELECT id, updated_at FROM chats").fetchall())

    responses = run_together(20, lambda i: app.test_client().post(
        f"/chats/{chats[i]['id']}/messages", json={"content": "hello"}, headers=user["headers"]))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 5 + [429] * 15
    assert provider.peak_in_flight == 20
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["Retry-After"]) > 0 and "quota" in refused.get_json()["detail"]
    assert count_rows(db, "messages") == 10  # five pairs, nothing of the refused fifteen
    assert db.execute("SELECT tokens FROM monthly_usage").fetchone()[0] == 5 * TOKENS_PER_SEND
    # A refused send changes nothing, not even its chat's place in the list (updated_at).
    unchanged = {chat_id for chat_id, at in db.execute("SELECT id, updated_at FROM chats") if touched_at[chat_id] == at}
    assert len(unchanged) == 15
    assert not db.execute("SELECT count(*) FROM messages WHERE chat_id = ANY(%s)", [list(unchanged)]).fetchone()[0]

    # Now the quota is used up: refused before the model is asked.
    asked = len(provider.requests)
    provider.gather(None)
    again = client.post(f"/chats/{chats[0]['id']}/messages", json={"content": "hi"}, headers=user["headers"])
    assert again.status_code == 429 and len(provider.requests) == asked
    renews = quota.next_period(datetime.now(timezone.utc))
    assert abs(int(again.headers["Retry-After"]) - (renews - datetime.now(timezone.utc)).total_seconds()) < 5
    usage = client.get("/usage", headers=user["headers"]).get_json()
    assert usage["quota"] == {"monthly_tokens": 5 * TOKENS_PER_SEND, "used": 5 * TOKENS_PER_SEND,
                              "renews_at": renews.isoformat()}


def test_the_quota_is_checked_per_calendar_month():
    now = datetime(2026, 12, 31, 23, 59, 30, tzinfo=timezone.utc)
    assert quota.period_of(now).isoformat() == "2026-12-01"
    assert quota.next_period(now) == datetime(2027, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(Exception) as refused:
        quota.check(100, 100, now)
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "31"
    quota.check(99, 100, now)
    quota.check(10**9, None, now)


def test_the_models_command_adds_lists_and_disables(database_url, app_factory, monkeypatch, db):
    app_factory()  # clean tables
    monkeypatch.setenv("MEMLAYER_DATABASE_URL", database_url)
    runner = CliRunner()

    added = runner.invoke(cli.main, ["models", "add", "gpt-4o-mini", "--context-window", "128000",
                                     "--input-price", "0.15", "--output-price", "0.6"])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(cli.main, ["models", "list"])
    assert listed.exit_code == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split() == list(cli.MODEL_COLUMNS)
    assert lines[1].split() == ["gpt-4o-mini", "openai", "128000", "0.150000", "0.600000", "True"]
    assert lines[2].split()[:2] == ["offline", "offline"]

    assert runner.invoke(cli.main, ["models", "disable", "gpt-4o-mini"]).exit_code == 0
    assert db.execute("SELECT is_enabled FROM models WHERE name = 'gpt-4o-mini'").fetchone()[0] is False
    readded = runner.invoke(cli.main, ["models", "add", "gpt-4o-mini"])  # enables again, keeps prices
    assert readded.exit_code == 0
    row = db.execute("SELECT is_enabled, context_window, output_price_per_million::text FROM models "
                     "WHERE name = 'gpt-4o-mini'").fetchone()
    assert row == (True, 128000, "0.600000")

    assert runner.invoke(cli.main, ["models", "disable", "offline"]).exit_code == 0
    assert runner.invoke(cli.main, ["models", "add", "offline"]).exit_code == 0  # enabled again, still offline
    assert db.execute("SELECT provider, is_enabled FROM models WHERE name = 'offline'").fetchone() == ("offline", True)

    missing = runner.invoke(cli.main, ["models", "disable", "nope"])
    assert missing.exit_code != 0 and "no model named 'nope'" in missing.output


def test_configuration_adds_its_model_once(database_url, app_factory, monkeypatch, db):
    app_factory()
    monkeypatch.setenv("MEMLAYER_DATABASE_URL", database_url)
    monkeypatch.setenv("MEMLAYER_LLM_BASE_URL", "http://127.0.0.1:11434/v1")
    monkeypatch.setenv("MEMLAYER_LLM_MODEL", "llama3.2")
    runner = CliRunner()
    assert runner.invoke(cli.main, ["migrate"]).exit_code == 0
    db.execute("UPDATE models SET context_window = 32768 WHERE name = 'llama3.2'")
    assert runner.invoke(cli.main, ["migrate"]).exit_code == 0  # an operator's change survives
    assert db.execute("SELECT provider, context_window FROM models WHERE name = 'llama3.2'").fetchone() == ("openai", 32768)


def test_provider_configuration_is_checked():
    settings = config.load()
    settings.update(LLM_BASE_URL="http://127.0.0.1:11434/v1", LLM_MODEL=None)
    with pytest.raises(ConfigError, match="MEMLAYER_LLM_MODEL"):
        config.check(settings)
    settings.update(LLM_BASE_URL="ftp://example.com", LLM_MODEL="m")
    with pytest.raises(ConfigError, match="http"):
        config.check(settings)
    settings.update(LLM_BASE_URL=None, LLM_API_KEY="sk-x", LLM_MODEL="gpt-4o-mini")
    config.check(settings)
    assert config.llm_base_url(settings) == "https://api.openai.com/v1"
    assert config.default_model(settings) == "gpt-4o-mini"
    for name, bad in (("LLM_TIMEOUT", 0), ("LLM_TIMEOUT", "soon"), ("MONTHLY_TOKEN_QUOTA", 0), ("MONTHLY_TOKEN_QUOTA", 1.5)):
        settings.update({name: bad})
        with pytest.raises(ConfigError):
            config.check(settings)
        settings.update({name: getattr(config.Defaults, name)})
