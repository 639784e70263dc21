-- Vectors for recall by meaning (the embeddings table exists only where the server has pgvector).

-- name: vectors_available()$
-- Whether this database can store vectors (migration 0007 found pgvector).
SELECT to_regclass('embeddings') IS NOT NULL;

-- name: store_message_embedding(user_id, message_id, model, embedding)!
-- Keep the vector of one of the user's messages (replacing one of another model).
INSERT INTO embeddings (user_id, message_id, model, embedding)
SELECT :user_id, :message_id, :model, CAST(:embedding AS vector)
FROM messages
WHERE id = :message_id AND user_id = :user_id
ON CONFLICT (message_id) DO UPDATE SET model = EXCLUDED.model, embedding = EXCLUDED.embedding;

-- name: store_memory_embedding(user_id, memory_id, key, content, model, embedding)!
-- Keep the vector of one of the user's memories (replacing one of another model), made of this key
-- and content: when the memory has changed since, nothing is stored (its new words get their own).
INSERT INTO embeddings (user_id, memory_id, model, embedding)
SELECT :user_id, :memory_id, :model, CAST(:embedding AS vector)
FROM memories
WHERE id = :memory_id AND user_id = :user_id AND key IS NOT DISTINCT FROM :key AND content = :content
ON CONFLICT (memory_id) DO UPDATE SET model = EXCLUDED.model, embedding = EXCLUDED.embedding;

-- name: count_missing_embeddings(model)$
-- How many user messages and memories have no vector of this model.
SELECT (SELECT count(*) FROM messages AS m
        WHERE m.role = 'user'
          AND NOT EXISTS (SELECT FROM embeddings AS e WHERE e.message_id = m.id AND e.model = :model))
     + (SELECT count(*) FROM memories AS mem
        WHERE NOT EXISTS (SELECT FROM embeddings AS e WHERE e.memory_id = mem.id AND e.model = :model));

-- name: missing_message_embeddings(model, after_id, limit)
-- The next user messages (by id, after the cursor) that have no vector of this model.
SELECT m.id, m.user_id, m.content
FROM messages AS m
WHERE m.id > :after_id
  AND m.role = 'user'
  AND NOT EXISTS (SELECT FROM embeddings AS e WHERE e.message_id = m.id AND e.model = :model)
ORDER BY m.id
LIMIT :limit;

-- name: missing_memory_embeddings(model, after_id, limit)
-- The next memories (by id, after the cursor) that have no vector of this model.
SELECT mem.id, mem.user_id, mem.key, mem.content
FROM memories AS mem
WHERE mem.id > :after_id
  AND NOT EXISTS (SELECT FROM embeddings AS e WHERE e.memory_id = mem.id AND e.model = :model)
ORDER BY mem.id
LIMIT :limit;
