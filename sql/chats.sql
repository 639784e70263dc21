-- name: create_chat(user_id, title, model)^
-- Open a chat for a user (model NULL: the service's default model).
INSERT INTO chats (user_id, title, model)
VALUES (:user_id, :title, :model)
RETURNING id, title, model, created_at, updated_at;

-- name: get_chat(user_id, chat_id)^
-- One live chat of this user.
SELECT id, title, model, created_at, updated_at
FROM chats
WHERE id = :chat_id AND user_id = :user_id AND deleted_at IS NULL;

-- name: list_chats(user_id, limit)
-- The first page of the user's live chats, most recently active first.
SELECT id, title, model, created_at, updated_at
FROM chats
WHERE user_id = :user_id AND deleted_at IS NULL
ORDER BY updated_at DESC, id DESC
LIMIT :limit;

-- name: list_chats_after(user_id, after_updated_at, after_id, limit)
-- The page of the user's live chats that follows the cursor (updated_at, id).
SELECT id, title, model, created_at, updated_at
FROM chats
WHERE user_id = :user_id
  AND deleted_at IS NULL
  AND (updated_at, id) < (:after_updated_at, :after_id)
ORDER BY updated_at DESC, id DESC
LIMIT :limit;

-- name: update_chat(user_id, chat_id, title, set_model, model)^
-- Change the title (unless NULL) and, when set_model, the model of a live chat of this user.
UPDATE chats
SET title = coalesce(:title, title),
    model = CASE WHEN :set_model THEN :model ELSE model END,
    updated_at = now()
WHERE id = :chat_id AND user_id = :user_id AND deleted_at IS NULL
RETURNING id, title, model, created_at, updated_at;

-- name: soft_delete_chat(user_id, chat_id)!
-- Hide a live chat of this user from every read.
UPDATE chats
SET deleted_at = now()
WHERE id = :chat_id AND user_id = :user_id AND deleted_at IS NULL;

-- name: chat_for_send(user_id, chat_id, default_model, period, recent_limit)^
-- What a send needs to know first: the live chat's model (its own, or the default) with its
-- settings (NULL when that model is not in the table), the tokens charged to the user this period,
-- whether the user has memories extracted from their messages, and the chat's latest messages, newest
-- first (candidates for the responder's recent window) as one JSON array of {seq, role, content}: one
-- round trip for all of it, and one value parsed in C costs the worker less than 50 rows.
SELECT m.name, m.provider, m.context_window, m.is_enabled,
       m.input_price_per_million, m.output_price_per_million,
       coalesce((SELECT u.tokens FROM monthly_usage u
                 WHERE u.user_id = :user_id AND u.period = :period), 0) AS tokens_used,
       coalesce((SELECT u.memory_extraction FROM users u WHERE u.id = :user_id), false) AS memory_extraction,
       (SELECT coalesce(json_agg(json_build_object('seq', w.seq, 'role', w.role, 'content', w.content)
                                 ORDER BY w.seq DESC), '[]')
        FROM (SELECT seq, role, content FROM messages
              WHERE chat_id = c.id
              ORDER BY seq DESC
              LIMIT :recent_limit) AS w) AS recent
FROM chats c
LEFT JOIN models m ON m.name = coalesce(c.model, :default_model)
WHERE c.id = :chat_id AND c.user_id = :user_id AND c.deleted_at IS NULL;
