"""What responders give back: a Reply, a ReplyStream of pieces, and the Responder interface itself."""

from dataclasses import dataclass
from typing import Iterator, Protocol

from memlayer.providers.token_count import estimate_tokens, message_tokens


@dataclass(frozen=True)
class Reply:
    """A finished reply and the tokens it took (the provider's count, or our estimate)."""

    content: str
    prompt_tokens: int
    completion_tokens: int


class ReplyStream(Protocol):
    """A reply arriving in pieces: iterate for the text deltas, then read `reply`; always close."""

    reply: Reply | None

    def __iter__(self) -> Iterator[str]:
        """Yield the reply's text piece by piece; raise ProviderFailed/ProviderTimedOut when it breaks off."""
        ...

    def close(self) -> None:
        """Stop receiving (the client left or the stream ended) and release the connection."""
        ...


class Responder(Protocol):
    """Anything that turns a conversation into the assistant's next reply."""

    def reply(self, model: str, messages: list[dict]) -> Reply:
        """Given OpenAI-style [{role, content}] messages, oldest first, return the whole reply."""
        ...

    def stream(self, model: str, messages: list[dict]) -> ReplyStream:
        """Start a reply that arrives in pieces; failures to start raise here, before any piece."""
        ...


def estimated_reply(messages: list[dict], content: str) -> Reply:
    """A reply whose token counts are our estimate, for providers that report none."""
    return Reply(content, sum(map(message_tokens, messages)), estimate_tokens(content))


class ChunkedReplyStream:
    """A finished text handed out in a few pieces, so responders without a stream of their own can stream."""

    CHUNKS = 4

    def __init__(self, reply: Reply):
        self._whole = reply
        self.reply: Reply | None = None

    def __iter__(self) -> Iterator[str]:
        """The text in about CHUNKS pieces, split between words."""
        words = self._whole.content.split(" ")
        size = max(1, -(-len(words) // self.CHUNKS))
        for start in range(0, len(words), size):
            piece = " ".join(words[start:start + size])
            yield piece if start + size >= len(words) else piece + " "
        self.reply = self._whole

    def close(self) -> None:
        """Nothing to release."""
