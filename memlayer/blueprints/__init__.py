"""One blueprint per resource: auth, chats, messages, health, docs."""
