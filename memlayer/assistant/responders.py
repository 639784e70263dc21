"""Which responder answers for each provider: the built-in offline one, and the HTTP one when configured."""

from abc import ABC, abstractmethod

from flask import Flask, current_app

from memlayer import config as settings
from memlayer.memory.context import one_line, recalled_items
from memlayer.providers.chat_completions import ChatCompletionsResponder
from memlayer.providers.replies import ChunkedReplyStream, Reply, ReplyStream, Responder, estimated_reply

RESPONDERS_KEY = "memlayer.assistant.responders"
OFFLINE = "offline"
OPENAI = "openai"


class TextResponder(ABC):
    """A responder that computes its whole answer at once; subclasses implement answer()."""

    @abstractmethod
    def answer(self, model: str, messages: list[dict]) -> str:
        """The reply text."""

    def reply(self, model: str, messages: list[dict]) -> Reply:
        """The answer with estimated token counts."""
        return estimated_reply(messages, self.answer(model, messages))

    def stream(self, model: str, messages: list[dict]) -> ReplyStream:
        """The answer in a few pieces."""
        return ChunkedReplyStream(self.reply(model, messages))


class OfflineResponder(TextResponder):
    """Replies without any language model, showing what the memory layer recalled for the message."""

    QUOTE_LIMIT = 200

    def answer(self, model: str, messages: list[dict]) -> str:
        """Say that no model is configured, quote the new message, and list the recalled memories."""
        said = messages[-1]["content"] if messages and messages[-1]["role"] == "user" else ""
        quote = one_line(said, self.QUOTE_LIMIT)
        recalled = recalled_items(messages)
        if recalled:
            memory = "Memories I recalled for this message:\n" + "\n".join(f"- {item}" for item in recalled)
        else:
            memory = "I found no memories related to this message."
        return (
            "No language model answers this chat, so this is an automatic reply. "
            f"You said: \u201c{quote}\u201d\n{memory}"
        )


def init_app(app: Flask) -> None:
    """Install one responder per available provider: always the offline one, the HTTP one when configured."""
    responders: dict[str, Responder] = {OFFLINE: OfflineResponder()}
    base_url = settings.llm_base_url(app.config)
    if base_url is not None:
        responders[OPENAI] = ChatCompletionsResponder(
            base_url, api_key=settings.llm_api_key(app.config), timeout=float(app.config["LLM_TIMEOUT"])
        )
    app.extensions[RESPONDERS_KEY] = responders


def available_providers(app: Flask | None = None) -> set[str]:
    """The providers this app can reach."""
    return set((app or current_app).extensions[RESPONDERS_KEY])


def responder_for(provider: str) -> Responder:
    """The current app's responder of a provider (the caller checked it is available)."""
    return current_app.extensions[RESPONDERS_KEY][provider]


def close_all(app: Flask) -> None:
    """Release the responders' HTTP connections (at worker exit)."""
    for responder in app.extensions.get(RESPONDERS_KEY, {}).values():
        close = getattr(responder, "close", None)
        if close is not None:
            close()
