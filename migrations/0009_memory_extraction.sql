-- Memories that write themselves: an extraction job per stored exchange, run by `memlayer worker`.
-- depends: 0008_revoked_tokens_of_deleted_users

-- A user can turn extraction off for themselves; the last time they deleted a memory keeps a late job
-- of an older message from writing back what they removed.
ALTER TABLE users
    ADD COLUMN memory_extraction boolean NOT NULL DEFAULT true,
    ADD COLUMN memories_forgotten_at timestamptz;

-- Where each version of a memory came from: the API, or extraction from one of the user's messages.
ALTER TABLE memory_events
    ADD COLUMN source text NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'extraction')),
    ADD COLUMN message_id uuid REFERENCES messages (id) ON DELETE SET NULL;
CREATE INDEX memory_events_message_idx ON memory_events (message_id) WHERE message_id IS NOT NULL;

-- The queue: one job per user message, written in the send's transaction. A job goes with its message,
-- chat or account (ON DELETE CASCADE), so deletion always wins and leaves no row of the user behind.
-- A running job holds a lease; when its worker dies the lease runs out and another worker claims it.
CREATE TABLE memory_jobs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    message_id  uuid NOT NULL UNIQUE REFERENCES messages (id) ON DELETE CASCADE,
    state       text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts    integer NOT NULL DEFAULT 0,
    run_at      timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz,
    outcome     text,  -- a few words on how it ended ("applied 2", "over quota", "ProviderTimedOut"), never text
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
-- What workers claim: due jobs, queued or with a lapsed lease.
CREATE INDEX memory_jobs_due_idx ON memory_jobs (run_at) WHERE state IN ('queued', 'running');
CREATE INDEX memory_jobs_user_idx ON memory_jobs (user_id);

-- Tokens spent on extraction, billed like replies (and charged to monthly_usage with them).
CREATE TABLE memory_usage (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id           uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    message_id        uuid REFERENCES messages (id) ON DELETE SET NULL,
    model             text NOT NULL,
    prompt_tokens     integer NOT NULL,
    completion_tokens integer NOT NULL,
    cost              numeric NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX memory_usage_user_idx ON memory_usage (user_id, created_at);
