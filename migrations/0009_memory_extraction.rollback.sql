DROP TABLE memory_usage;
DROP TABLE memory_jobs;
DROP INDEX memory_events_message_idx;
ALTER TABLE memory_events DROP COLUMN message_id, DROP COLUMN source;
ALTER TABLE users DROP COLUMN memories_forgotten_at, DROP COLUMN memory_extraction;
