DROP TABLE IF EXISTS memory_events;
DROP TABLE IF EXISTS memories;
DROP INDEX IF EXISTS messages_recall_idx;
DROP INDEX IF EXISTS chats_user_deleted_idx;
ALTER TABLE messages DROP COLUMN IF EXISTS search_vector;
