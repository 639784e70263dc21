"""MemLayer: a chat-and-memory backend for LLM assistants; the app factory is memlayer.app.create_app."""
