-- Data in: conversations imported from a MemLayer export or a ChatGPT export, each once per user.
-- depends: 0009_memory_extraction

-- Which source conversation became which chat, so that running an import again adds nothing twice. It goes
-- with the chat (deleting the chat lets it be imported again) and with the account.
CREATE TABLE chat_imports (
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source      text NOT NULL CHECK (source IN ('memlayer', 'chatgpt')),
    source_id   text NOT NULL,
    chat_id     uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    imported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, source, source_id)
);
CREATE INDEX chat_imports_chat_idx ON chat_imports (chat_id);

-- A memory's history can now also say it was imported.
ALTER TABLE memory_events DROP CONSTRAINT memory_events_source_check;
ALTER TABLE memory_events ADD CONSTRAINT memory_events_source_check
    CHECK (source IN ('api', 'extraction', 'import'));
