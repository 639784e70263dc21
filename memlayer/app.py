"""The Flask app factory: create_app() wires configuration, storage, the web layer and every blueprint."""

import json

import orjson
from flask import Flask, Request
from flask.json.provider import DefaultJSONProvider
from flask_cors import CORS
from werkzeug.exceptions import BadRequest
from werkzeug.middleware.proxy_fix import ProxyFix

from memlayer import config
from memlayer.assistant import responders
from memlayer.auth import tokens

# `auth` is also a part (memlayer.auth): the blueprint module must not take its name in this namespace.
from memlayer.blueprints import auth as auth_routes
from memlayer.blueprints import chats, docs, health, memories, messages, metrics, models, usage
from memlayer.memory import embeddings
from memlayer.storage import db
from memlayer.storage.embedded import resolve_database_url
from memlayer.web import bodies, errors, headers, logs, ratelimit
from memlayer.web import metrics as request_metrics


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, written by orjson; input nested deeper than MAX_JSON_DEPTH is a client error (400).

    orjson writes UUIDs and datetimes as marshmallow does, so rows from web/rendering.py go out as they are;
    anything else it does not know (Decimal) goes through Flask's default. Parsing stays the standard
    library's, whose errors json_problem words for the client.
    """

    def dumps(self, obj, **kwargs) -> str:
        """The value as JSON text (compact; Flask's indent and key sorting are not applied)."""
        return self.encode(obj).decode()

    def response(self, *args, **kwargs):
        """A JSON response, encoded straight to bytes."""
        return self._app.response_class(self.encode(self._prepare_response_obj(args, kwargs)) + b"\n",
                                        mimetype=self.mimetype)

    def encode(self, obj) -> bytes:
        """orjson's encoding; the standard library's (escaped) for text orjson refuses, such as a lone surrogate."""
        try:
            return orjson.dumps(obj, default=self.default, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:
            return super().dumps(obj).encode()

    def loads(self, s, **kwargs):
        """Parse JSON; too deep a nesting raises ValueError so Flask answers 400."""
        try:
            value = super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
        if json_depth(value) > self._app.config["MAX_JSON_DEPTH"]:
            raise ValueError("JSON nested too deeply")
        return value


class JSONRequest(Request):
    """Flask's request, except that a body that is not JSON says why (Flask hides it outside debug mode)."""

    def on_json_loading_failed(self, e: ValueError | None):
        """400 naming the problem in our words: where the syntax breaks, or what is wrong (never the body itself)."""
        if e is None:
            return super().on_json_loading_failed(e)
        raise BadRequest(f"Malformed JSON body: {json_problem(e)}")


def json_problem(error: ValueError) -> str:
    """What is wrong with a body that would not parse, said plainly rather than in the parser's words."""
    if isinstance(error, UnicodeDecodeError):
        return "the body is not UTF-8 text"
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg.lower()} at line {error.lineno}, column {error.colno}"
    if "digits" in str(error):  # int() refuses numbers of more than 4,300 digits
        return "a number has too many digits"
    if str(error) == "JSON nested too deeply":
        return "nested too deeply"
    return "not valid JSON"


def json_depth(value) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (a scalar is 0), without recursion."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in children)
    return deepest


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: settings, logging, errors, pool, auth, CORS, blueprints."""
    app = Flask(__name__)
    app.config.update(config.load())
    if test_config:
        app.config.update(test_config)
    config.check(app.config)
    app.json = JSONProvider(app)
    app.request_class = JSONRequest

    logs.init_app(app)
    errors.init_app(app)
    headers.init_app(app)
    bodies.init_app(app)
    app.config["DATABASE_URL"] = resolve_database_url(app.config)
    db.init_app(app)
    tokens.init_app(app)
    responders.init_app(app)
    embeddings.init_app(app)
    CORS(
        app,
        origins=config.cors_origins(app.config),
        expose_headers=["Link", "X-Request-ID", "Retry-After"],
        allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-ID"],
        max_age=600,
    )
    request_metrics.init_app(app)
    for blueprint in (auth_routes.bp, chats.bp, messages.bp, memories.bp, models.bp, usage.bp, health.bp, docs.bp,
                      metrics.bp):
        app.register_blueprint(blueprint)
    ratelimit.init_app(app)
    if app.config["PROXY_FIX_X_FOR"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["PROXY_FIX_X_FOR"])
    return app
