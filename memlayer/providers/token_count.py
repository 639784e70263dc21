"""Token estimates for providers that report no usage, and for fitting a prompt into a model's window."""

MESSAGE_OVERHEAD_TOKENS = 4  # role and separators, as chat formats add them


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate: about four ASCII characters per token, one token per other character."""
    if text.isascii():  # most text: no copy needed to count
        return (len(text) + 3) // 4
    ascii_chars = len(text.encode("ascii", "ignore"))
    return (ascii_chars + 3) // 4 + (len(text) - ascii_chars)


def message_tokens(message: dict) -> int:
    """Estimated tokens one chat message costs, overhead included."""
    return estimate_tokens(message["content"]) + MESSAGE_OVERHEAD_TOKENS
