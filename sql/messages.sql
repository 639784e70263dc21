-- name: insert_user_message(user_id, chat_id, content)^
-- Store what the user said in a chat.
INSERT INTO messages (user_id, chat_id, role, content)
VALUES (:user_id, :chat_id, 'user', :content)
RETURNING id, seq, chat_id, user_id, role, content, model, prompt_tokens, completion_tokens, cost, created_at;

-- name: insert_assistant_message(user_id, chat_id, content, model, prompt_tokens, completion_tokens, cost)^
-- Store the assistant's reply with the model that wrote it and what it cost.
INSERT INTO messages (user_id, chat_id, role, content, model, prompt_tokens, completion_tokens, cost)
VALUES (:user_id, :chat_id, 'assistant', :content, :model, :prompt_tokens, :completion_tokens, :cost)
RETURNING id, seq, chat_id, user_id, role, content, model, prompt_tokens, completion_tokens, cost, created_at;

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

-- name: recent_messages(user_id, chat_id, limit)
-- A live chat's latest messages, newest first (candidates for the responder's recent window);
-- ownership checked once, as in list_messages.
SELECT seq, role, content
FROM messages
WHERE chat_id = :chat_id
  AND EXISTS (SELECT 1 FROM chats WHERE id = :chat_id AND user_id = :user_id AND deleted_at IS NULL)
ORDER BY seq DESC
LIMIT :limit;
