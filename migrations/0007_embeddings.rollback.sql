DROP FUNCTION recall_similarity(uuid, text, text, uuid);
DROP FUNCTION recall_nearest(uuid, text, text, integer);
DROP TRIGGER IF EXISTS memories_forget_stale_embedding ON memories;
DROP FUNCTION IF EXISTS memories_forget_stale_embedding();
DROP TABLE IF EXISTS embeddings;
-- The vector extension stays: other databases' objects or a DBA may rely on it.
