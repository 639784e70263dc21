-- name: token_is_usable(jti, user_id)$
-- True when the token is not revoked and its user still exists.
SELECT EXISTS (SELECT 1 FROM users WHERE id = :user_id)
   AND NOT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = :jti);

-- name: revoke_token(jti, user_id, expires_at)!
-- Persist a revocation; revoking twice is harmless.
INSERT INTO revoked_tokens (jti, user_id, expires_at)
VALUES (:jti, :user_id, :expires_at)
ON CONFLICT (jti) DO NOTHING;

-- name: revoke_refresh_token(jti, user_id, expires_at)$
-- Spend a refresh token: revoke it, returning false when someone already did (a reuse, or a concurrent refresh).
WITH revoked AS (
    INSERT INTO revoked_tokens (jti, user_id, expires_at)
    VALUES (:jti, :user_id, :expires_at)
    ON CONFLICT (jti) DO NOTHING
    RETURNING jti
)
SELECT EXISTS (SELECT 1 FROM revoked);

-- name: purge_expired_revocations()!
-- Forget revocations of tokens that have expired anyway.
DELETE FROM revoked_tokens
WHERE expires_at < now();
