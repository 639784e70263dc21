"""ChatGPT's data export (conversations.json) as conversations MemLayer imports.

Each conversation's `mapping` is a tree of nodes (a regenerated answer or an edited question branches it);
`current_node` is the leaf the user last saw. The conversation is that branch, root to leaf. Kept: user and
assistant messages with text; skipped (and counted): system and tool messages, messages addressed to a
tool, hidden ones, and messages with no text (an image alone, an empty part).
"""

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from memlayer.web.schemas import MAX_MESSAGE_LENGTH

KEPT_ROLES = ("user", "assistant")
TEXT_CONTENT = ("text", "multimodal_text")


@dataclass
class Converted:
    """One conversation ready for ChatImportSchema, with its source id and what was left out (by reason)."""

    source_id: str
    body: dict
    skipped: Counter = field(default_factory=Counter)


def is_chatgpt_export(document) -> bool:
    """Whether a parsed file looks like ChatGPT's conversations.json (a list of conversations with a mapping)."""
    return isinstance(document, list) and all(isinstance(c, dict) and "mapping" in c for c in document)


def convert(conversation: dict) -> Converted:
    """The current branch of one ChatGPT conversation as an import body (messages may be empty)."""
    mapping = conversation.get("mapping") or {}
    skipped: Counter = Counter()
    messages = []
    started = _time(conversation.get("create_time"))
    latest = started
    for node in current_branch(mapping, conversation.get("current_node")):
        message = node.get("message")
        if not message:
            continue  # the tree's root carries no message
        reason, text = _text_of(message)
        if reason:
            skipped[reason] += 1
            continue
        created = _time(message.get("create_time")) or latest
        latest = max(created, latest) if latest else created  # never earlier than the message before
        messages.append({"role": message["author"]["role"], "content": text, "created_at": _iso(latest)})
    body = {"title": (conversation.get("title") or "").strip()[:200] or None, "created_at": _iso(started),
            "messages": messages}
    source_id = str(conversation.get("conversation_id") or conversation.get("id") or "")
    return Converted(source_id, body, skipped)


def current_branch(mapping: dict, current_node: str | None) -> list[dict]:
    """The nodes from the root to `current_node` (or, without one, to the newest leaf), in order."""
    if current_node not in mapping:
        leaves = [node for node in mapping.values() if not node.get("children")]
        if not leaves:
            return []
        current_node = max(leaves, key=lambda n: (n.get("message") or {}).get("create_time") or 0)["id"]
    branch, seen, node_id = [], set(), current_node
    while node_id is not None and node_id in mapping and node_id not in seen:
        seen.add(node_id)  # a malformed file with a cycle must not loop forever
        branch.append(mapping[node_id])
        node_id = mapping[node_id].get("parent")
    return branch[::-1]


def _text_of(message: dict) -> tuple[str | None, str]:
    """(why it is skipped, or None; its text)."""
    role = (message.get("author") or {}).get("role")
    if role not in KEPT_ROLES:
        return f"{role or 'unknown'} messages", ""
    metadata = message.get("metadata") or {}
    if metadata.get("is_visually_hidden_from_conversation"):
        return "hidden messages", ""
    if message.get("recipient", "all") != "all":
        return "messages to tools", ""
    content = message.get("content") or {}
    if content.get("content_type") not in TEXT_CONTENT:
        return f"{content.get('content_type') or 'unknown'} content", ""
    parts = content.get("parts") or []
    text = "\n".join(part for part in parts if isinstance(part, str)).strip()
    if not text:
        return "messages without text", ""
    if len(text) > MAX_MESSAGE_LENGTH:
        return f"messages over {MAX_MESSAGE_LENGTH:,} characters", ""
    return None, text


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _time(epoch) -> datetime | None:
    """A ChatGPT timestamp (seconds since 1970, UTC) as a datetime, or None."""
    if isinstance(epoch, (int, float)) and not isinstance(epoch, bool) and epoch > 0:
        return datetime.fromtimestamp(epoch, tz=timezone.utc)
    return None
