-- Users, their chats and messages, and revoked tokens.
-- depends:

CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE TABLE chats (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);

-- Serves "GET /chats": a user's live chats, most recently active first, keyset-paginated.
CREATE INDEX chats_user_activity_idx
    ON chats (user_id, updated_at DESC, id DESC)
    WHERE deleted_at IS NULL;

CREATE TABLE messages (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Total order of messages: both rows of one send share now(), so time alone cannot order them.
    seq        bigint GENERATED ALWAYS AS IDENTITY,
    chat_id    uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text NOT NULL CHECK (role IN ('user', 'assistant')),
    content    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Serves "GET /chats/{id}/messages" (oldest first, keyset on seq) and the recent window.
CREATE UNIQUE INDEX messages_chat_seq_idx ON messages (chat_id, seq);
CREATE INDEX messages_user_idx ON messages (user_id);

CREATE TABLE revoked_tokens (
    jti        uuid PRIMARY KEY,
    user_id    uuid NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE INDEX revoked_tokens_expires_idx ON revoked_tokens (expires_at);
