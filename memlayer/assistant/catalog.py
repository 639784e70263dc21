"""The language models a chat can use: what each costs, which are usable here, and the ones configuration adds."""

from dataclasses import dataclass
from decimal import Decimal

import psycopg
from marshmallow import ValidationError

from memlayer import config as settings
from memlayer.assistant.responders import OFFLINE, OPENAI, available_providers
from memlayer.providers.replies import Reply
from memlayer.storage.db import sql
from memlayer.web.errors import Conflict

MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class ChatModel:
    """The model that answers a chat, with what the service needs to call it and bill it."""

    name: str
    provider: str
    context_window: int
    input_price_per_million: Decimal
    output_price_per_million: Decimal

    def cost(self, reply: Reply) -> Decimal:
        """What a reply cost at this model's prices."""
        return (reply.prompt_tokens * self.input_price_per_million
                + reply.completion_tokens * self.output_price_per_million) / MILLION


def is_usable(model: dict | None) -> bool:
    """Whether a models row may answer here: it exists, is enabled, and its provider is configured."""
    return model is not None and model["is_enabled"] and model["provider"] in available_providers()


def check_choice(conn: psycopg.Connection, name: str | None) -> None:
    """Refuse (422) a model a chat asks for that is unknown, disabled or not served here; None means the default."""
    if name is not None and not is_usable(sql.models.get_model(conn, name=name)):
        raise ValidationError({"model": ["Unknown or disabled model; GET /models lists the ones you can use."]})


def chat_model(row: dict, config) -> ChatModel:
    """The model of a chat_for_send row; 409 when the chat's model can no longer answer."""
    if row["name"] is None:
        # Only the default can be missing (chats.model references models): configuration was never seeded.
        name = settings.default_model(config)
        provider = OFFLINE if name == settings.OFFLINE_MODEL else OPENAI
        return ChatModel(name, provider, int(config["LLM_CONTEXT_WINDOW"]), Decimal(0), Decimal(0))
    if not is_usable(row):
        raise Conflict(f"The model '{row['name']}' of this chat is not available; choose another with PATCH /chats/{{id}}.")
    return ChatModel(row["name"], row["provider"], row["context_window"],
                     row["input_price_per_million"], row["output_price_per_million"])


def seed_models(conn: psycopg.Connection, config) -> None:
    """Add the built-in offline model and the configured default model, unless they are there already."""
    sql.models.seed_model(conn, name=settings.OFFLINE_MODEL, provider=OFFLINE, context_window=128_000)
    if settings.llm_base_url(config) is not None:
        sql.models.seed_model(conn, name=str(config["LLM_MODEL"]), provider=OPENAI,
                              context_window=int(config["LLM_CONTEXT_WINDOW"]))
