"""Concurrent requests never corrupt data: one winner per email, adjacent message pairs."""

from conftest import count_rows, run_together


def test_parallel_registrations_of_one_email(app, db):
    def register(_):
        return app.test_client().post("/auth/register", json={"email": "race@example.com", "password": "same password"})

    responses = run_together(10, register)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 9
    assert all(r.get_json()["detail"] == "Email already registered" for r in responses if r.status_code == 409)
    assert count_rows(db, "users") == 1


def test_parallel_sends_to_one_chat_stay_in_pairs(app, user, chat, db):
    def send(i):
        return app.test_client().post(
            f"/chats/{chat['id']}/messages", json={"content": f"message number {i}"}, headers=user["headers"]
        )

    responses = run_together(20, send)
    assert [r.status_code for r in responses] == [201] * 20

    rows = db.execute("SELECT role, content FROM messages WHERE chat_id = %s ORDER BY seq", [chat["id"]]).fetchall()
    assert len(rows) == 40
    assert [role for role, _ in rows] == ["user", "assistant"] * 20
    for (_, question), (_, answer) in zip(rows[0::2], rows[1::2]):
        assert f"\u201c{question}\u201d" in answer  # each reply sits right after its own message
    assert sorted(content for role, content in rows if role == "user") == sorted(f"message number {i}" for i in range(20))

    # The API returns the same order.
    listed = app.test_client().get(f"/chats/{chat['id']}/messages?limit=200", headers=user["headers"]).get_json()
    assert [m["content"] for m in listed] == [content for _, content in rows]
