"""Renderers answer exactly what the marshmallow response schemas they stand in for would answer."""

import json
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from flask import Flask
from marshmallow import Schema, fields

from memlayer.app import JSONProvider
from memlayer.web import schemas
from memlayer.web.rendering import Renderer

WHEN = datetime(2026, 11, 30, 17, 4, 5, 120000, tzinfo=timezone.utc)


def sample_value(field: fields.Field, variant: int):
    """A value of the field's type as a database row holds it (variant 1: None where the field allows it)."""
    if variant == 1 and field.allow_none:
        return None
    if isinstance(field, fields.Nested):
        return sample_row(field.schema, variant)
    return {
        fields.UUID: uuid.uuid4(), fields.Integer: 7 + variant, fields.Float: Decimal("0.000125"),
        fields.Boolean: variant == 0, fields.Date: date(2026, 11, 30),
        # Whole seconds and a non-UTC offset: isoformat() leaves out microseconds and keeps the offset.
        fields.AwareDateTime: WHEN if variant == 0 else WHEN.replace(microsecond=0, tzinfo=timezone(timedelta(hours=2))),
    }.get(type(field), "text with ü, \"quotes\" and \u2028")


def sample_row(schema: Schema, variant: int) -> dict:
    """A row with every field the schema dumps."""
    return {field.attribute or name: sample_value(field, variant) for name, field in schema.dump_fields.items()}


def as_json(app: Flask, value) -> object:
    """The value through the app's JSON provider and back."""
    return json.loads(app.json.dumps(value))


def response_schemas() -> list[type[Schema]]:
    """Every schema of memlayer.web.schemas that a Renderer can render (response schemas)."""
    found = []
    for schema_class in vars(schemas).values():
        if isinstance(schema_class, type) and issubclass(schema_class, Schema) and schema_class is not Schema:
            try:
                Renderer(schema_class())
            except TypeError:
                continue
            found.append(schema_class)
    return found


@pytest.fixture(scope="module")
def json_app() -> Flask:
    app = Flask(__name__)
    app.json = JSONProvider(app)
    return app


def test_the_hot_pages_schemas_are_renderable():
    names = {schema_class.__name__ for schema_class in response_schemas()}
    assert {"ChatSchema", "MessageSchema", "MemorySchema", "MemoryEventSchema", "RecallItemSchema"} <= names


@pytest.mark.parametrize("schema_class", response_schemas(), ids=lambda s: s.__name__)
def test_a_renderer_answers_what_the_schema_dumps(json_app, schema_class):
    schema = schema_class()
    rows = [sample_row(schema, 0), sample_row(schema, 1)]
    assert as_json(json_app, Renderer(schema).rows(rows)) == as_json(json_app, schema.dump(rows, many=True))


def test_messages_gather_their_usage_as_the_schema_does(json_app):
    schema = schemas.MessageSchema()
    base = {"id": uuid.uuid4(), "seq": 3, "chat_id": uuid.uuid4(), "user_id": uuid.uuid4(), "content": "hi",
            "created_at": WHEN}
    rows = [base | {"role": "user", "model": None, "prompt_tokens": None, "completion_tokens": None, "cost": None},
            base | {"role": "assistant", "model": "m", "prompt_tokens": 12, "completion_tokens": 3,
                    "cost": Decimal("0.0000375")}]
    rendered = as_json(json_app, Renderer(schema).rows(rows))
    assert rendered == as_json(json_app, schema.dump(rows, many=True))
    assert rendered[0]["usage"] is None and rendered[1]["usage"] == {"prompt_tokens": 12, "completion_tokens": 3,
                                                                      "cost": 0.0000375}
    assert "seq" not in rendered[1] and rendered[1]["created_at"] == "2026-11-30T17:04:05.120000+00:00"


def test_a_memory_in_search_results_has_no_chat_id(json_app):
    schema = schemas.RecallItemSchema()
    rows = [{"source": "memory", "id": uuid.uuid4(), "chat_id": None, "content": "c", "score": 1.5,
             "created_at": WHEN, "chat_title": None},
            {"source": "message", "id": uuid.uuid4(), "chat_id": uuid.uuid4(), "content": "c", "score": 0.5,
             "created_at": WHEN, "chat_title": "t"}]
    rendered = as_json(json_app, Renderer(schema).rows(rows))
    assert rendered == as_json(json_app, schema.dump(rows, many=True))
    assert "chat_id" not in rendered[0] and rendered[1]["chat_id"] == str(rows[1]["chat_id"])


def test_a_field_the_renderer_cannot_write_is_refused_when_it_is_built():
    class WithMethod(Schema):
        shout = fields.Method("loud")

        def loud(self, row):
            return row["word"].upper()

    with pytest.raises(TypeError, match="Method"):
        Renderer(WithMethod())
