"""GET /metrics: Prometheus's text format behind the operator token, summed across gunicorn's workers."""

import http.client
import re
import time

import pytest

from conftest import OPERATOR_TOKEN, bearer, new_user
from test_faults import children_of, is_gunicorn
from test_serve import Server


def sample(text: str, name: str, **labels) -> float:
    """The value of one sample of the exposition (0 when it is not there)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_are_for_the_operator_only(client, app_factory):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert app_factory(METRICS_TOKEN=None).test_client().get("/metrics").status_code == 404


def test_requests_are_counted_by_route_template_method_and_status(client):
    user = new_user(client)
    before = client.get("/metrics", headers=bearer(OPERATOR_TOKEN)).get_data(as_text=True)
    for _ in range(3):
        client.get("/chats/00000000-0000-0000-0000-000000000000", headers=user["headers"])
    client.get("/memories/search?q=cat", headers=user["headers"])
    response = client.get("/metrics", headers=bearer(OPERATOR_TOKEN))
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    text = response.get_data(as_text=True)
    route = "/chats/<uuid:chat_id>"
    counted = sample(text, "memlayer_http_requests_total", route=route, method="GET", status="404")
    assert counted - sample(before, "memlayer_http_requests_total", route=route, method="GET", status="404") == 3
    assert "00000000-0000" not in text  # never the raw path
    assert sample(text, "memlayer_recall_duration_seconds_count", kind="lexical") >= 1
    assert sample(text, "memlayer_jobs", state="queued") == 0
    assert "memlayer_db_pool_size" in text and "memlayer_jobs_oldest_queued_seconds" in text


def test_model_calls_are_counted_with_their_tokens(llm_client, provider):
    user = new_user(llm_client)
    chat = llm_client.post("/chats", json={}, headers=user["headers"]).get_json()
    before = llm_client.get("/metrics", headers=bearer(OPERATOR_TOKEN)).get_data(as_text=True)
    llm_client.post(f"/chats/{chat['id']}/messages", json={"content": "hello"}, headers=user["headers"])
    text = llm_client.get("/metrics", headers=bearer(OPERATOR_TOKEN)).get_data(as_text=True)
    for kind, tokens in (("prompt", 11), ("completion", 7)):
        grew = (sample(text, "memlayer_provider_tokens_total", model="fake-model", purpose="reply", kind=kind)
                - sample(before, "memlayer_provider_tokens_total", model="fake-model", purpose="reply", kind=kind))
        assert grew == tokens
    assert sample(text, "memlayer_provider_request_duration_seconds_count", model="fake-model", purpose="reply") >= 1


@pytest.mark.slow
def test_a_scrape_of_memlayer_serve_sums_every_worker(database_url, tmp_path):
    metrics_dir = tmp_path / "metrics"
    server = Server({"MEMLAYER_DATABASE_URL": database_url, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, workers=2)
    try:
        server.wait_ready()
        (master,) = [pid for pid in children_of(server.process.pid) if is_gunicorn(pid)]
        workers = children_of(master)
        assert len(workers) == 2
        served, deadline = 0, time.monotonic() + 30
        # Fresh connections until both workers have answered some (each writes its own counter file).
        while time.monotonic() < deadline and not all((metrics_dir / f"counter_{pid}.db").exists() for pid in workers):
            for _ in range(20):
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
                connection.request("GET", "/no-such-page")
                assert connection.getresponse().status == 404
                connection.close()
                served += 1
        assert all((metrics_dir / f"counter_{pid}.db").exists() for pid in workers), "one worker took every request"
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
        response = connection.getresponse()
        text = response.read().decode()
        assert response.status == 200
        assert sample(text, "memlayer_http_requests_total", route="unmatched", method="GET", status="404") == served
        assert len(re.findall(r'^memlayer_db_pool_size\{pid="\d+",pool="api"\}', text, re.M)) == 2  # per worker
    finally:
        code, output = server.interrupt()
    assert code == 0, output
