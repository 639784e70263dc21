"""Password hashing with Argon2id at OWASP's parameters, upgrades at login, and the headers every answer carries."""

from werkzeug.security import check_password_hash

from conftest import new_user, register
from memlayer.auth.passwords import check_hash, hash_password
from memlayer.config import Defaults


def stored_hash(db, email: str) -> str:
    return db.execute("SELECT password_hash FROM users WHERE email = %s", [email]).fetchone()[0]


def test_the_default_is_argon2id_at_owasps_minimum_19_mib_t_2_p_1(app):
    app.config["PASSWORD_HASH_METHOD"] = Defaults.PASSWORD_HASH_METHOD
    with app.app_context():
        hashed = hash_password("correct horse battery")
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert check_hash(hashed, "correct horse battery") and not check_hash(hashed, "correct horse battery!")


def test_an_scrypt_hash_still_logs_in_and_becomes_argon2id(app_factory, db):
    user = register(app_factory(PASSWORD_HASH_METHOD="scrypt:1024:8:1").test_client())
    client = app_factory(PASSWORD_HASH_METHOD="argon2id:1:1024:1").test_client()
    assert client.post("/auth/login", json={"email": user["email"], "password": "wrong password"}).status_code == 401
    assert stored_hash(db, user["email"]).startswith("scrypt:1024:8:1$")
    assert client.post("/auth/login", json={"email": user["email"], "password": user["password"]}).status_code == 200
    upgraded = stored_hash(db, user["email"])
    assert upgraded.startswith("$argon2id$v=19$m=1024,t=1,p=1$") and check_hash(upgraded, user["password"])
    assert client.post("/auth/login", json={"email": user["email"], "password": user["password"]}).status_code == 200
    assert stored_hash(db, user["email"]) == upgraded  # upgraded once


def test_an_older_hash_is_upgraded_at_the_next_successful_login(app_factory, db):
    old_app = app_factory()  # hashes with scrypt:1024:8:1
    user = register(old_app.test_client())
    other = register(old_app.test_client())
    assert stored_hash(db, user["email"]).startswith("scrypt:1024:8:1$")

    client = app_factory(PASSWORD_HASH_METHOD="scrypt:2048:8:2").test_client()
    wrong = client.post("/auth/login", json={"email": other["email"], "password": "not the password"})
    assert wrong.status_code == 401
    assert stored_hash(db, other["email"]).startswith("scrypt:1024:8:1$")  # no upgrade without the password

    login = client.post("/auth/login", json={"email": user["email"], "password": user["password"]})
    assert login.status_code == 200
    upgraded = stored_hash(db, user["email"])
    assert upgraded.startswith("scrypt:2048:8:2$") and check_password_hash(upgraded, user["password"])
    again = client.post("/auth/login", json={"email": user["email"], "password": user["password"]})
    assert again.status_code == 200 and stored_hash(db, user["email"]) == upgraded  # upgraded once


def test_every_api_answer_is_nosniff_and_no_store(client):
    user = new_user(client)
    answers = [
        client.post("/auth/login", json={"email": user["email"], "password": user["password"]}),
        client.get("/chats", headers=user["headers"]),
        client.get("/chats"),  # 401
        client.get("/no/such/route"),  # 404
        client.post("/chats", data="not json", headers={**user["headers"], "Content-Type": "application/json"}),
        client.get("/health"),
        client.get("/openapi.json"),
    ]
    for answer in answers:
        assert answer.headers["X-Content-Type-Options"] == "nosniff", answer.request.path
        assert answer.headers["Cache-Control"] == "no-store", answer.request.path


def test_the_docs_pages_static_assets_may_be_cached(client):
    asset = client.get("/docs/assets/swagger-ui.css")
    assert asset.status_code == 200
    assert asset.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" not in asset.headers.get("Cache-Control", "")
