-- name: create_chat(user_id, title)^
-- Open a chat for a user.
INSERT INTO chats (user_id, title)
VALUES (:user_id, :title)
RETURNING id, title, created_at, updated_at;

-- name: get_chat(user_id, chat_id)^
-- One live chat of this user.
SELECT id, title, created_at, updated_at
FROM chats
WHERE id = :chat_id AND user_id = :user_id AND deleted_at IS NULL;

-- name: lock_chat(user_id, chat_id)^
-- One live chat of this user, row-locked until the transaction ends so sends to it serialize.
SELECT id, title, created_at, updated_at
FROM chats
WHERE id = :chat_id AND user_id = :user_id AND deleted_at IS NULL
FOR UPDATE;

-- name: list_chats(user_id, limit)
-- The first page of the user's live chats, most recently active first.
SELECT id, title, created_at, updated_at
FROM chats
WHERE user_id = :user_id AND deleted_at IS NULL
ORDER BY updated_at DESC, id DESC
LIMIT :limit;

-- name: list_chats_after(user_id, after_updated_at, after_id, limit)
-- The page of the user's live chats that follows the cursor (updated_at, id).
SELECT id, title, created_at, updated_at
FROM chats
WHERE user_id = :user_id
  AND deleted_at IS NULL
  AND (updated_at, id) < (:after_updated_at, :after_id)
ORDER BY updated_at DESC, id DESC
LIMIT :limit;

-- name: rename_chat(user_id, chat_id, title)^
-- Change the title of a live chat of this user.
UPDATE chats
SET title = :title, updated_at = now()
WHERE id = :chat_id AND user_id = :user_id AND deleted_at IS NULL
RETURNING id, title, created_at, updated_at;

-- name: touch_chat(user_id, chat_id)!
-- Mark the chat as just active.
UPDATE chats
SET updated_at = now()
WHERE id = :chat_id AND user_id = :user_id;

-- name: soft_delete_chat(user_id, chat_id)!
-- Hide a live chat of this user from every read.
UPDATE chats
SET deleted_at = now()
WHERE id = :chat_id AND user_id = :user_id AND deleted_at IS NULL;
