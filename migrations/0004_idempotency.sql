-- Idempotency keys for POST /chats and POST /chats/{id}/messages (Stripe's model), kept 24 hours.
-- depends: 0003_models_usage

CREATE TABLE idempotency_keys (
    user_id       uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key           text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- sha256 of the request's path and canonical JSON body: the same key with another request is refused.
    fingerprint   text        NOT NULL,
    -- Whose request holds the key; a retry may take it over only once locked_until has passed.
    claim_token   uuid        NOT NULL,
    locked_until  timestamptz,
    -- The first response, recorded in the same transaction as its writes; NULL while it runs.
    status_code   smallint,
    response_body text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
