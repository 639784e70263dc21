"""/models: the language models a chat can choose."""

from flask import Blueprint, current_app
from flask_jwt_extended import jwt_required

from memlayer import config as settings
from memlayer.assistant.catalog import is_usable
from memlayer.storage.db import get_pool, retrying, sql
from memlayer.web.schemas import ModelSchema

bp = Blueprint("models", __name__, url_prefix="/models")

_model = ModelSchema()


@bp.get("")
@jwt_required()
def list_models():
    """The enabled models this service can answer with, by name."""
    for attempt in retrying():
        with attempt, get_pool().connection() as conn:  # reads only: autocommit (storage/db.py)
            rows = list(sql.models.list_enabled_models(conn))
    default = settings.default_model(current_app.config)
    return _model.dump([{**row, "is_default": row["name"] == default} for row in rows if is_usable(row)], many=True)
