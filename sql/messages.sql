-- name: insert_message(user_id, chat_id, role, content)^
-- Store one message of a chat.
INSERT INTO messages (user_id, chat_id, role, content)
VALUES (:user_id, :chat_id, :role, :content)
RETURNING id, seq, chat_id, user_id, role, content, created_at;

-- name: list_messages(user_id, chat_id, after_seq, limit)
-- A page of a chat's messages, oldest first, after the cursor (if any).
SELECT id, seq, chat_id, user_id, role, content, created_at
FROM messages
WHERE chat_id = :chat_id
  AND user_id = :user_id
  AND seq > :after_seq
ORDER BY seq
LIMIT :limit;

-- name: recent_messages(user_id, chat_id, limit)
-- The chat's latest messages, newest first (candidates for the responder's recent window).
SELECT id, role, content
FROM messages
WHERE chat_id = :chat_id AND user_id = :user_id
ORDER BY seq DESC
LIMIT :limit;
