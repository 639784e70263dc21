"""What the responder sees: system prompt, recalled memories and the recent window, within a token budget."""

from dataclasses import dataclass, replace
from uuid import UUID

import psycopg

from memlayer.memory.embeddings import Vector
from memlayer.memory.recall import recall
from memlayer.providers.token_count import MESSAGE_OVERHEAD_TOKENS, estimate_tokens, message_tokens

MEMORY_HEADER = (
    "Memory: things this user said in earlier conversations or asked you to remember, "
    "most relevant first, each with the date it was said or saved. "
    "Use them when they help; do not mention this list otherwise."
)
MEMORY_ITEM_CHARS = 600  # one recalled item's text never takes more than this much of the prompt
CHAT_TITLE_CHARS = 60


@dataclass(frozen=True)
class ContextSettings:
    """The knobs of context assembly (MEMLAYER_SYSTEM_PROMPT, _RECALL_K, _CONTEXT_TOKENS, _RECENT_MESSAGES)."""

    system_prompt: str
    recall_k: int
    token_budget: int
    recent_limit: int

    @classmethod
    def from_config(cls, config) -> "ContextSettings":
        """Read the settings from the app's config."""
        return cls(
            system_prompt=str(config.get("SYSTEM_PROMPT") or "").strip(),
            recall_k=int(config["RECALL_K"]),
            token_budget=int(config["CONTEXT_TOKENS"]),
            recent_limit=int(config["RECENT_MESSAGES"]),
        )

    def within(self, context_window: int) -> "ContextSettings":
        """These settings for a model of this context window, leaving a quarter of it for the reply."""
        return replace(self, token_budget=min(self.token_budget, context_window * 3 // 4))


def assemble_context(
    conn: psycopg.Connection, *, user_id: UUID, chat_id: UUID, content: str, settings: ContextSettings,
    recent_newest_first: list[dict], vector: Vector | None = None,
) -> list[dict]:
    """Everything the responder gets for a new message, as OpenAI-style [{role, content}].

    `recent_newest_first` is the chat's latest messages ({seq, role, content}, at most settings.recent_limit),
    read by the caller with the chat itself. Runs only reads (recall), on the caller's connection.
    """
    recalled = []
    if settings.recall_k > 0:
        # The window's messages are not recalled as memories. The window is the chat's latest rows, so its
        # first seq marks them as well as their 50 ids would, without sending (and matching) a uuid array.
        recalled = recall(conn, user_id=user_id, text=content, limit=settings.recall_k,
                          window_chat_id=chat_id if recent_newest_first else None,
                          window_start_seq=recent_newest_first[-1]["seq"] if recent_newest_first else None,
                          vector=vector)
    return compose(settings, recalled=recalled, recent_newest_first=recent_newest_first, content=content)


def compose(settings: ContextSettings, *, recalled: list[dict], recent_newest_first: list[dict], content: str) -> list[dict]:
    """Order the parts (system prompt, memory, recent window oldest first, the new message) within the budget.

    The memory block may use a quarter of the budget; the window gets what is left, newest messages first.
    """
    head = []
    if settings.system_prompt:
        head.append({"role": "system", "content": settings.system_prompt})
    block = memory_block(recalled, settings.token_budget // 4)
    if block is not None:
        head.append(block)
    new_message = {"role": "user", "content": content}
    remaining = settings.token_budget - sum(map(message_tokens, head)) - message_tokens(new_message)
    window = []
    for row in recent_newest_first:
        message = {"role": row["role"], "content": row["content"]}
        remaining -= message_tokens(message)
        if remaining < 0:
            break
        window.append(message)
    return head + window[::-1] + [new_message]


def memory_line(item: dict) -> str:
    """One recalled item as the responder sees it: when, where from, what (`2023-05-07 (chat "Trip"): ...`)."""
    when = item["created_at"].date().isoformat()
    if item.get("chat_title") is not None:
        where = f'chat "{one_line(item["chat_title"], CHAT_TITLE_CHARS)}"'
    else:
        where = "saved memory"
    return f"{when} ({where}): {one_line(item['content'], MEMORY_ITEM_CHARS)}"


def memory_block(recalled: list[dict], token_budget: int) -> dict | None:
    """The system message listing recalled items in the order given, one per line; None when nothing fits."""
    lines = [MEMORY_HEADER]
    remaining = token_budget - estimate_tokens(MEMORY_HEADER) - MESSAGE_OVERHEAD_TOKENS
    for item in recalled:
        line = "- " + memory_line(item)
        remaining -= estimate_tokens(line) + 1
        if remaining < 0:
            break
        lines.append(line)
    if len(lines) == 1:
        return None
    return {"role": "system", "content": "\n".join(lines)}


def recalled_items(messages: list[dict]) -> list[str]:
    """The items of the memory block in `messages` (the inverse of memory_block), for responders that list them."""
    for message in messages:
        if message["role"] == "system" and message["content"].startswith(MEMORY_HEADER + "\n"):
            return [line[2:] for line in message["content"].splitlines()[1:]]
    return []


def one_line(text: str, limit: int) -> str:
    """The text on one line (whitespace runs become one space), cut to `limit` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
