-- name: save_memory(user_id, key, content)^
-- Create a memory, or (when the user already has one under this key) replace its content in
-- place; log the change either way. A NULL key never conflicts, so keyless saves always create.
WITH saved AS (
    INSERT INTO memories (user_id, key, content)
    VALUES (:user_id, :key, :content)
    ON CONFLICT (user_id, key) WHERE key IS NOT NULL
    DO UPDATE SET content = EXCLUDED.content, updated_at = now()
    -- xmax is 0 only on a freshly inserted row version: how an upsert tells insert from update.
    RETURNING id, key, content, created_at, updated_at, (xmax = 0) AS created
), logged AS (
    INSERT INTO memory_events (memory_id, user_id, event, key, content)
    SELECT id, :user_id, CASE WHEN created THEN 'created' ELSE 'updated' END, key, content
    FROM saved
)
SELECT id, key, content, created_at, updated_at, created
FROM saved;

-- name: update_memory(user_id, memory_id, content, set_key, key)^
-- Change a memory's content and/or key (set_key tells "key: null" from "key not given"); log it.
WITH changed AS (
    UPDATE memories
    SET content = coalesce(:content, content),
        key = CASE WHEN :set_key THEN :key ELSE key END,
        updated_at = now()
    WHERE id = :memory_id AND user_id = :user_id
    RETURNING id, key, content, created_at, updated_at
), logged AS (
    INSERT INTO memory_events (memory_id, user_id, event, key, content)
    SELECT id, :user_id, 'updated', key, content
    FROM changed
)
SELECT id, key, content, created_at, updated_at
FROM changed;

-- name: get_memory(user_id, memory_id)^
-- One memory of this user.
SELECT id, key, content, created_at, updated_at
FROM memories
WHERE id = :memory_id AND user_id = :user_id;

-- name: list_memories(user_id, limit)
-- The first page of the user's memories, newest first.
SELECT id, key, content, created_at, updated_at
FROM memories
WHERE user_id = :user_id
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: list_memories_after(user_id, after_created_at, after_id, limit)
-- The page of the user's memories that follows the cursor (created_at, id).
SELECT id, key, content, created_at, updated_at
FROM memories
WHERE user_id = :user_id
  AND (created_at, id) < (:after_created_at, :after_id)
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: memory_history(user_id, memory_id)
-- Every version of one memory of this user, oldest first.
SELECT event, key, content, at
FROM memory_events
WHERE memory_id = :memory_id AND user_id = :user_id
ORDER BY id;

-- name: delete_memory(user_id, memory_id)!
-- Forget one memory of this user, with its history.
DELETE FROM memories
WHERE id = :memory_id AND user_id = :user_id;

-- name: delete_all_memories(user_id)!
-- Forget every memory of this user, with their history.
DELETE FROM memories
WHERE user_id = :user_id;

-- name: recall(user_id, text, window_chat_id, window_start_seq, limit)
-- The user's past words (user messages in live chats) and memories most relevant to a text.
-- A row matches when it shares any salient lexeme with the text (OR over the text's first
-- 32 distinct non-stopword lexemes, so long texts stay cheap); it is ranked by ts_rank
-- (normalized by document length) blended with recency: a row loses up to half its score
-- as it ages, with a 30-day half-life. Stopword-only or empty texts match nothing.
-- Messages of window_chat_id from window_start_seq on (the recent window the responder already
-- sees) are left out; both NULL leave out nothing.
WITH query AS (
    -- Each lexeme is quoted for tsquery syntax ('' and \\ escapes), then OR-ed: no user text
    -- is ever parsed as tsquery operators.
    SELECT string_agg('''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''', ' | ')::tsquery AS q
    FROM (
        SELECT lexeme
        FROM unnest(to_tsvector('english', :text))
        ORDER BY positions[1]
        LIMIT 32
    ) AS salient
), hits AS (
    -- (SELECT q FROM query) is computed once, before the scans, so the GIN indexes can use it.
    SELECT 'message' AS source, m.id, m.chat_id, m.content, m.created_at,
           ts_rank(m.search_vector, (SELECT q FROM query), 1) AS relevance, m.created_at AS as_of
    FROM messages AS m
    WHERE m.user_id = :user_id
      AND m.role = 'user'
      AND m.search_vector @@ (SELECT q FROM query)
      AND (m.chat_id IS DISTINCT FROM :window_chat_id::uuid OR m.seq < :window_start_seq::bigint)
      -- The user's soft-deleted chats are few: hashed once, not a lookup per candidate.
      AND m.chat_id NOT IN (SELECT id FROM chats WHERE user_id = :user_id AND deleted_at IS NOT NULL)
    UNION ALL
    SELECT 'memory', mem.id, NULL, mem.content, mem.created_at,
           ts_rank(mem.search_vector, (SELECT q FROM query), 1), mem.updated_at
    FROM memories AS mem
    WHERE mem.user_id = :user_id
      AND mem.search_vector @@ (SELECT q FROM query)
)
SELECT source, id, chat_id, content, created_at,
       -- float8, not numeric: numeric power() costs more than the ranking itself.
       relevance * (0.5 + 0.5 * power(0.5, extract(epoch FROM now() - as_of)::float8 / (30 * 86400))) AS score
FROM hits
ORDER BY score DESC, created_at DESC, id
LIMIT :limit;
