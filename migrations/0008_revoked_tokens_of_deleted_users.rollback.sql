DROP INDEX revoked_tokens_user_idx;
ALTER TABLE revoked_tokens DROP CONSTRAINT revoked_tokens_user_id_fkey;
