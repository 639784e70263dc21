"""Where assistant replies come from: the Responder interface and its offline implementation."""

from typing import Protocol

from flask import Flask, current_app

from memlayer.context import one_line, recalled_items

RESPONDER_KEY = "memlayer.responder"


class Responder(Protocol):
    """Anything that turns a conversation into the assistant's next reply."""

    def reply(self, messages: list[dict]) -> str:
        """Given OpenAI-style [{role, content}] messages, oldest first, return the reply text."""
        ...


class OfflineResponder:
    """Replies without any language model, showing what the memory layer recalled for the message."""

    QUOTE_LIMIT = 200

    def reply(self, messages: list[dict]) -> str:
        """Say that no model is configured, quote the new message, and list the recalled memories."""
        said = messages[-1]["content"] if messages and messages[-1]["role"] == "user" else ""
        quote = one_line(said, self.QUOTE_LIMIT)
        recalled = recalled_items(messages)
        if recalled:
            memory = "Memories I recalled for this message:\n" + "\n".join(f"- {item}" for item in recalled)
        else:
            memory = "I found no memories related to this message."
        return (
            "No language model is configured, so this is an automatic reply. "
            f"You said: \u201c{quote}\u201d\n{memory}"
        )


def init_app(app: Flask, responder: Responder | None = None) -> None:
    """Install the responder the app will use."""
    app.extensions[RESPONDER_KEY] = responder or OfflineResponder()


def current_responder() -> Responder:
    """The responder of the current app."""
    return current_app.extensions[RESPONDER_KEY]
