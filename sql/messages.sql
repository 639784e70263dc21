-- name: store_exchange(user_id, chat_id, content, reply, model, prompt_tokens, completion_tokens, cost, period, quota, extract)^
-- One send's writes in one statement: lock the live chat's row (so sends to one chat serialize and each
-- pair stays adjacent), charge the reply's tokens to the user's period unless the total had already
-- reached the quota (NULL: no quota; the counter's row lock makes this hold under concurrency), then
-- store the user's message and the reply, in that order, queue memory extraction for the user's message
-- when :extract, and mark the chat active. Each step reads the one before, so a missing chat or a
-- refused charge writes nothing, not even the chat's updated_at; being one statement, it is
-- all-or-nothing even in autocommit. One row: chat_found and charged, the user's message's id, and the
-- stored reply (NULL columns when nothing was stored).
WITH chat AS (
    SELECT id
    FROM chats
    WHERE id = :chat_id AND user_id = :user_id AND deleted_at IS NULL
    FOR UPDATE
), charge AS (
    INSERT INTO monthly_usage AS u (user_id, period, tokens)
    SELECT :user_id, :period, CAST(:prompt_tokens AS integer) + CAST(:completion_tokens AS integer)
    FROM chat
    ON CONFLICT (user_id, period) DO UPDATE
    SET tokens = u.tokens + EXCLUDED.tokens
    WHERE CAST(:quota AS bigint) IS NULL OR u.tokens < CAST(:quota AS bigint)
    RETURNING tokens
), pair AS (
    -- Rows are inserted in ORDER BY order, so the user's message takes the lower seq.
    INSERT INTO messages (user_id, chat_id, role, content, model, prompt_tokens, completion_tokens, cost)
    SELECT :user_id, :chat_id, v.role, v.content, v.model, v.prompt_tokens, v.completion_tokens, v.cost
    FROM charge,
         (VALUES (1, 'user', CAST(:content AS text), NULL, NULL, NULL, NULL),
                 (2, 'assistant', CAST(:reply AS text), CAST(:model AS text), CAST(:prompt_tokens AS integer),
                  CAST(:completion_tokens AS integer), CAST(:cost AS numeric))
         ) AS v (position, role, content, model, prompt_tokens, completion_tokens, cost)
    ORDER BY v.position
    RETURNING id, seq, chat_id, user_id, role, content, model, prompt_tokens, completion_tokens, cost, created_at
), job AS (
    INSERT INTO memory_jobs (user_id, message_id)
    SELECT :user_id, id FROM pair WHERE role = 'user' AND CAST(:extract AS boolean)
), touched AS (
    UPDATE chats
    SET updated_at = now()
    WHERE id IN (SELECT chat_id FROM pair)
)
SELECT EXISTS (SELECT FROM chat) AS chat_found, EXISTS (SELECT FROM charge) AS charged,
       (SELECT id FROM pair WHERE role = 'user') AS user_message_id,
       reply.id, reply.seq, reply.chat_id, reply.user_id, reply.role, reply.content, reply.model,
       reply.prompt_tokens, reply.completion_tokens, reply.cost, reply.created_at
FROM (SELECT) AS one
LEFT JOIN pair AS reply ON reply.role = 'assistant';

-- name: list_messages(user_id, chat_id, after_seq, limit)
-- A page of a live chat's messages of this user, oldest first, after the cursor (if any).
-- Ownership is a one-time EXISTS, not a per-row user_id filter: with that filter the planner
-- expects a handful of rows and sorts the whole chat; this way it reads (chat_id, seq) in order.
SELECT id, seq, chat_id, user_id, role, content, model, prompt_tokens, completion_tokens, cost, created_at
FROM messages
WHERE chat_id = :chat_id
  AND seq > :after_seq
  AND EXISTS (SELECT 1 FROM chats WHERE id = :chat_id AND user_id = :user_id AND deleted_at IS NULL)
ORDER BY seq
LIMIT :limit;

-- name: messages_before(user_id, chat_id, before_seq, limit)
-- A page of a live chat's messages of this user, newest first, before a position (the latest ones for
-- the largest bigint); ownership checked once, as in list_messages, so the index is read backwards.
SELECT id, seq, chat_id, user_id, role, content, model, prompt_tokens, completion_tokens, cost, created_at
FROM messages
WHERE chat_id = :chat_id
  AND seq < :before_seq
  AND EXISTS (SELECT 1 FROM chats WHERE id = :chat_id AND user_id = :user_id AND deleted_at IS NULL)
ORDER BY seq DESC
LIMIT :limit;

-- name: message_seq(user_id, chat_id, message_id)$
-- Where one message of the user's live chat stands (NULL when it is not there): the position that
-- ?after= and ?before= name by the message's id.
SELECT m.seq
FROM messages AS m
JOIN chats AS c ON c.id = m.chat_id
WHERE m.id = :message_id AND m.chat_id = :chat_id AND c.user_id = :user_id AND c.deleted_at IS NULL;
