"""Where assistant replies come from: the Responder interface and its offline implementation."""

from typing import Protocol

from flask import Flask, current_app

RESPONDER_KEY = "memlayer.responder"


class Responder(Protocol):
    """Anything that turns a conversation into the assistant's next reply."""

    def reply(self, messages: list[dict]) -> str:
        """Given OpenAI-style [{role, content}] messages, oldest first, return the reply text."""
        ...


class OfflineResponder:
    """Replies without any language model, so the service works with nothing else installed."""

    QUOTE_LIMIT = 200

    def reply(self, messages: list[dict]) -> str:
        """Acknowledge the latest user message and say that no model is configured."""
        said = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        quote = said if len(said) <= self.QUOTE_LIMIT else said[: self.QUOTE_LIMIT] + "…"
        earlier = sum(1 for m in messages if m["role"] == "user") - 1
        return (
            "No language model is configured, so this is an automatic reply. "
            f"You said: \u201c{quote}\u201d. "
            f"I can see {earlier} earlier message{'s' if earlier != 1 else ''} of yours in this chat."
        )


def init_app(app: Flask, responder: Responder | None = None) -> None:
    """Install the responder the app will use."""
    app.extensions[RESPONDER_KEY] = responder or OfflineResponder()


def current_responder() -> Responder:
    """The responder of the current app."""
    return current_app.extensions[RESPONDER_KEY]
