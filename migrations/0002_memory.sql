-- The memory layer: full-text recall over the user's own messages and curated memories.
-- depends: 0001_initial

-- btree_gin lets one GIN index hold user_id next to the lexemes, so a recall reads only
-- the asking user's posting lists instead of every user's matches. It is a trusted extension.
CREATE EXTENSION IF NOT EXISTS btree_gin;

-- Only the user's own words are recalled; assistant replies are not memory.
ALTER TABLE messages
    ADD COLUMN search_vector tsvector
    GENERATED ALWAYS AS (to_tsvector('english', content)) STORED;

CREATE INDEX messages_recall_idx
    ON messages USING gin (user_id, search_vector)
    WHERE role = 'user';

-- Recall leaves out the user's soft-deleted chats; this finds them without reading live ones.
CREATE INDEX chats_user_deleted_idx ON chats (user_id) WHERE deleted_at IS NOT NULL;

CREATE TABLE memories (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key           text,
    content       text NOT NULL,
    search_vector tsvector
        GENERATED ALWAYS AS (to_tsvector('english', coalesce(key, '') || ' ' || content)) STORED,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One memory per (user, key): the target of the upsert's ON CONFLICT.
CREATE UNIQUE INDEX memories_user_key_idx ON memories (user_id, key) WHERE key IS NOT NULL;
-- Serves "GET /memories": newest first, keyset-paginated on (created_at, id).
CREATE INDEX memories_user_created_idx ON memories (user_id, created_at DESC, id DESC);
CREATE INDEX memories_recall_idx ON memories USING gin (user_id, search_vector);

-- Every version a memory has had, for "GET /memories/{id}/history".
CREATE TABLE memory_events (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    memory_id uuid NOT NULL REFERENCES memories (id) ON DELETE CASCADE,
    user_id   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    event     text NOT NULL CHECK (event IN ('created', 'updated')),
    key       text,
    content   text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX memory_events_memory_idx ON memory_events (memory_id, id);
CREATE INDEX memory_events_user_idx ON memory_events (user_id);
