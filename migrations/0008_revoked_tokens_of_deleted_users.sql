-- Revocations go with their user: a logout or refresh racing DELETE /auth/me left rows of deleted accounts.
-- depends: 0007_embeddings

DELETE FROM revoked_tokens AS r WHERE NOT EXISTS (SELECT FROM users AS u WHERE u.id = r.user_id);

ALTER TABLE revoked_tokens
    ADD CONSTRAINT revoked_tokens_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;

CREATE INDEX revoked_tokens_user_idx ON revoked_tokens (user_id);
