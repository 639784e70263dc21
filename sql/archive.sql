-- name: read_only_snapshot()!
-- The first statement of an export's transaction: every query after it reads the same snapshot.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;

-- name: export_account(user_id)^
-- The account as an export shows it.
SELECT id, email, created_at, memory_extraction
FROM users
WHERE id = :user_id;

-- name: export_messages(user_id)
-- Every live chat of the user with its messages, chat by chat (oldest chat first), each in its order; a chat
-- without messages comes as one row with NULL message columns. Read through a server-side cursor.
SELECT c.id AS chat_id, c.title, c.model AS chat_model, c.created_at AS chat_created_at,
       c.updated_at AS chat_updated_at,
       m.id, m.role, m.content, m.model, m.prompt_tokens, m.completion_tokens, m.cost, m.created_at
FROM chats AS c
LEFT JOIN messages AS m ON m.chat_id = c.id
WHERE c.user_id = :user_id AND c.deleted_at IS NULL
ORDER BY c.created_at, c.id, m.seq;

-- name: export_memories(user_id)
-- Every memory of the user with its history, memory by memory (oldest first), each version in order.
SELECT m.id, m.key, m.content, m.created_at, m.updated_at,
       e.event, e.key AS event_key, e.content AS event_content, e.at, e.source, e.message_id
FROM memories AS m
LEFT JOIN memory_events AS e ON e.memory_id = m.id
WHERE m.user_id = :user_id
ORDER BY m.created_at, m.id, e.id;

-- name: export_usage(user_id)^
-- What the user's replies and memory extraction have used, all time.
SELECT (SELECT count(*) FROM messages WHERE user_id = :user_id AND role = 'assistant' AND model IS NOT NULL)
           AS replies,
       (SELECT coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint FROM messages
        WHERE user_id = :user_id AND role = 'assistant') AS reply_tokens,
       (SELECT coalesce(sum(cost), 0) FROM messages WHERE user_id = :user_id AND role = 'assistant') AS reply_cost,
       (SELECT count(*) FROM memory_usage WHERE user_id = :user_id) AS extractions,
       (SELECT coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint FROM memory_usage
        WHERE user_id = :user_id) AS extraction_tokens,
       (SELECT coalesce(sum(cost), 0) FROM memory_usage WHERE user_id = :user_id) AS extraction_cost;

-- name: import_chat(user_id, title, created_at, updated_at)^
-- A chat for imported messages, with the times they give.
INSERT INTO chats (user_id, title, created_at, updated_at)
VALUES (:user_id, :title, :created_at, :updated_at)
RETURNING id, title, model, created_at, updated_at;

-- name: import_messages(user_id, chat_id, roles, contents, models, prompt_tokens, completion_tokens, costs, times)!
-- A conversation's messages in one statement, in the order given (so their seq follows it) with their times.
INSERT INTO messages (user_id, chat_id, role, content, model, prompt_tokens, completion_tokens, cost, created_at)
SELECT :user_id, :chat_id, m.role, m.content, m.model, m.prompt_tokens, m.completion_tokens, m.cost, m.created_at
FROM unnest(CAST(:roles AS text[]), CAST(:contents AS text[]), CAST(:models AS text[]),
            CAST(:prompt_tokens AS integer[]), CAST(:completion_tokens AS integer[]), CAST(:costs AS numeric[]),
            CAST(:times AS timestamptz[]))
     WITH ORDINALITY AS m (role, content, model, prompt_tokens, completion_tokens, cost, created_at, position)
ORDER BY m.position;

-- name: imported_user_messages(chat_id)
-- The user's messages of an imported chat (to queue their extraction when asked).
SELECT id, user_id FROM messages WHERE chat_id = :chat_id AND role = 'user' ORDER BY seq;

-- name: import_memory(user_id, key, content, created_at, updated_at, events, event_keys, event_contents, event_times, sources)^
-- One memory with its history (a single "created" version when none is given). Nothing is written, and no
-- row comes back, when the user already has it (same content from the same time: an import run again)
-- or already has a memory under its key (the user's current one is kept).
WITH saved AS (
    INSERT INTO memories (user_id, key, content, created_at, updated_at)
    SELECT :user_id, :key, :content, :created_at, :updated_at
    WHERE NOT EXISTS (SELECT FROM memories
                      WHERE user_id = :user_id AND content = :content AND created_at = :created_at)
    ON CONFLICT (user_id, key) WHERE key IS NOT NULL DO NOTHING
    RETURNING id
), logged AS (
    INSERT INTO memory_events (memory_id, user_id, event, key, content, at, source)
    SELECT saved.id, :user_id, e.event, e.key, e.content, e.at, e.source
    FROM saved,
         unnest(CAST(:events AS text[]), CAST(:event_keys AS text[]), CAST(:event_contents AS text[]),
                CAST(:event_times AS timestamptz[]), CAST(:sources AS text[]))
         WITH ORDINALITY AS e (event, key, content, at, source, position)
    ORDER BY e.position
)
SELECT id FROM saved;

-- name: find_import(user_id, source, source_id)$
-- The chat a source conversation was imported as, if it was.
SELECT chat_id FROM chat_imports WHERE user_id = :user_id AND source = :source AND source_id = :source_id;

-- name: record_import(user_id, source, source_id, chat_id)!
-- Remember that a source conversation was imported (its chat goes with it).
INSERT INTO chat_imports (user_id, source, source_id, chat_id)
VALUES (:user_id, :source, :source_id, :chat_id);
