DROP TABLE IF EXISTS monthly_usage;
DROP INDEX IF EXISTS messages_usage_idx;
ALTER TABLE messages
    DROP COLUMN IF EXISTS model,
    DROP COLUMN IF EXISTS prompt_tokens,
    DROP COLUMN IF EXISTS completion_tokens,
    DROP COLUMN IF EXISTS cost;
ALTER TABLE chats DROP COLUMN IF EXISTS model;
DROP TABLE IF EXISTS models;
