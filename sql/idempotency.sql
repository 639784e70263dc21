-- name: purge_expired_keys(ttl_seconds)!
-- Forget a batch of keys older than their retention; concurrent purges skip each other's rows.
DELETE FROM idempotency_keys
WHERE ctid IN (
    SELECT ctid FROM idempotency_keys
    WHERE created_at < now() - make_interval(secs => :ttl_seconds)
    LIMIT 100
    FOR UPDATE SKIP LOCKED
);

-- name: claim_key(user_id, key, fingerprint, claim_token, lease_seconds, ttl_seconds)$
-- Claim the key for this request: new, expired, or the same request abandoned (its lease ran out).
-- True when this request now holds the key.
WITH claimed AS (
    INSERT INTO idempotency_keys AS k (user_id, key, fingerprint, claim_token, locked_until)
    VALUES (:user_id, :key, :fingerprint, :claim_token, now() + make_interval(secs => :lease_seconds))
    ON CONFLICT (user_id, key) DO UPDATE
    SET fingerprint = EXCLUDED.fingerprint,
        claim_token = EXCLUDED.claim_token,
        locked_until = EXCLUDED.locked_until,
        status_code = NULL,
        response_body = NULL,
        created_at = now()
    WHERE k.created_at < now() - make_interval(secs => :ttl_seconds)
       OR (k.status_code IS NULL AND k.locked_until < now() AND k.fingerprint = EXCLUDED.fingerprint)
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM claimed);

-- name: get_key(user_id, key)^
-- What another request did with the key: its fingerprint, its response once recorded, and how long it may still run.
SELECT fingerprint, status_code, response_body,
       greatest(1, ceil(extract(epoch FROM locked_until - now())))::int AS retry_after_seconds
FROM idempotency_keys
WHERE user_id = :user_id AND key = :key;

-- name: record_response(user_id, key, claim_token, status_code, response_body)$
-- Store the response with the writes it answers; false when the claim was lost (the caller must roll back).
WITH recorded AS (
    UPDATE idempotency_keys
    SET status_code = :status_code, response_body = :response_body, locked_until = NULL
    WHERE user_id = :user_id AND key = :key AND claim_token = :claim_token AND status_code IS NULL
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM recorded);

-- name: release_key(user_id, key, claim_token)!
-- Give up a claim whose request failed, so that a retry with the key runs again.
DELETE FROM idempotency_keys
WHERE user_id = :user_id AND key = :key AND claim_token = :claim_token AND status_code IS NULL;
