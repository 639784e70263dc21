"""Response rows without marshmallow's cost per row: a response schema compiled once into a plain function.

marshmallow's dump costs about 16 µs a row, a quarter of the worker CPU of a 50-message page (bench/cpu.py).
The schemas stay the one declaration of every response (and feed the OpenAPI document): a Renderer reads
their fields once and then only picks, renames and converts values, leaving UUIDs and datetimes to orjson,
which writes them as marshmallow does (tests/test_rendering.py renders every schema both ways).
"""

from typing import Callable

from marshmallow import Schema, fields

# Values orjson writes exactly as marshmallow's field would (str(uuid), isoformat(), the number, the text).
AS_IS = (fields.UUID, fields.String, fields.Integer, fields.Boolean, fields.AwareDateTime, fields.Date)


def _converter(field: fields.Field) -> Callable | None:
    """How one field's value becomes JSON-ready: None when orjson takes it as it is."""
    if isinstance(field, fields.Float):
        return float
    if isinstance(field, fields.Nested):
        nested = Renderer(field.schema)
        return nested.rows if field.many else nested.row
    if isinstance(field, AS_IS):
        return None
    raise TypeError(f"Renderer cannot render a {type(field).__name__} field")


class Renderer:
    """A response schema's dump as a plain function: row(dict) -> dict, rows(list) -> list."""

    def __init__(self, schema: Schema):
        hooks = type(schema)._hooks  # marshmallow's registry of @pre_dump/@post_dump methods
        if any(pass_collection for tag in ("pre_dump", "post_dump") for _, pass_collection, _ in hooks[tag]):
            raise TypeError(f"{type(schema).__name__} has a dump hook over whole collections")
        self.before = [getattr(schema, name) for name, _, _ in hooks["pre_dump"]]
        self.after = [getattr(schema, name) for name, _, _ in hooks["post_dump"]]
        self.fields = [(field.data_key or name, field.attribute or name, _converter(field))
                       for name, field in schema.dump_fields.items()]

    def row(self, row: dict) -> dict:
        """One row as the schema's dump would answer it."""
        for hook in self.before:
            row = hook(row, many=False)
        data = {}
        for key, attribute, convert in self.fields:
            if attribute in row:
                value = row[attribute]
                data[key] = convert(value) if convert is not None and value is not None else value
        for hook in self.after:  # they see values before orjson writes them (a UUID, not its text)
            data = hook(data, many=False)
        return data

    def rows(self, rows: list[dict]) -> list[dict]:
        """Each row as the schema's dump(many=True) would answer them."""
        return [self.row(row) for row in rows]
