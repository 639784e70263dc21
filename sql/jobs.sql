-- name: enqueue_extraction(user_id, message_id)!
-- Queue memory extraction for one user message, in the transaction that stores it.
INSERT INTO memory_jobs (user_id, message_id)
VALUES (:user_id, :message_id)
ON CONFLICT (message_id) DO NOTHING;

-- name: claim_jobs(limit, lease_seconds, max_attempts)
-- Take up to `limit` due jobs: queued ones, and running ones whose worker let the lease lapse (it died).
-- SKIP LOCKED lets workers claim side by side without waiting on each other; each claim counts an attempt.
WITH due AS (
    SELECT id
    FROM memory_jobs
    WHERE state IN ('queued', 'running')
      AND run_at <= now()
      AND (state = 'queued' OR lease_until < now())
      AND attempts < :max_attempts
    ORDER BY run_at, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE memory_jobs AS j
SET state = 'running', attempts = j.attempts + 1, lease_until = now() + make_interval(secs => :lease_seconds)
FROM due
WHERE j.id = due.id
RETURNING j.id, j.user_id, j.message_id, j.attempts;

-- name: give_up_abandoned(max_attempts)!
-- Jobs whose every attempt died with its worker: failed, not claimed again.
UPDATE memory_jobs
SET state = 'failed', outcome = 'abandoned', finished_at = now(), lease_until = NULL
WHERE state = 'running' AND lease_until < now() AND attempts >= :max_attempts;

-- name: lock_claimed_job(job_id, attempt)^
-- The job, locked, if this claim still holds it (running, same attempt): a lapsed claim applies nothing.
-- With what may have changed while the model thought: the chat deleted, extraction turned off, a memory
-- deleted after the message was written.
SELECT j.id, (c.deleted_at IS NULL) AS chat_live, u.memory_extraction,
       (u.memories_forgotten_at IS NOT NULL AND u.memories_forgotten_at > m.created_at) AS forgotten_since
FROM memory_jobs AS j
JOIN messages AS m ON m.id = j.message_id
JOIN chats AS c ON c.id = m.chat_id
JOIN users AS u ON u.id = j.user_id
WHERE j.id = :job_id AND j.state = 'running' AND j.attempts = :attempt
FOR UPDATE OF j;

-- name: finish_job(job_id, attempt, outcome)!
-- The claim's job is done (never run again).
UPDATE memory_jobs
SET state = 'done', outcome = :outcome, finished_at = now(), lease_until = NULL
WHERE id = :job_id AND state = 'running' AND attempts = :attempt;

-- name: retry_job(job_id, attempt, delay_seconds, max_attempts, outcome)!
-- The claim failed: run it again after `delay_seconds`, or give up after `max_attempts`.
UPDATE memory_jobs
SET state = CASE WHEN attempts >= :max_attempts THEN 'failed' ELSE 'queued' END,
    run_at = now() + make_interval(secs => :delay_seconds),
    finished_at = CASE WHEN attempts >= :max_attempts THEN now() END,
    outcome = :outcome, lease_until = NULL
WHERE id = :job_id AND state = 'running' AND attempts = :attempt;

-- name: extraction_input(job_id, period)^
-- What an extraction needs to start: the user message, its live chat and model, the user's setting and
-- this period's tokens. No row when the message, its chat or the account is gone (or the chat deleted).
SELECT m.user_id, m.chat_id, m.seq, m.content, m.created_at,
       u.memory_extraction, u.memories_forgotten_at,
       coalesce(c.model, '') AS chat_model,
       coalesce((SELECT mu.tokens FROM monthly_usage AS mu
                 WHERE mu.user_id = m.user_id AND mu.period = :period), 0) AS tokens_used
FROM memory_jobs AS j
JOIN messages AS m ON m.id = j.message_id
JOIN chats AS c ON c.id = m.chat_id AND c.deleted_at IS NULL
JOIN users AS u ON u.id = m.user_id
WHERE j.id = :job_id;

-- name: queue_counts()
-- Jobs per state, with the age of each state's oldest job (for operators: the queued one's matters).
SELECT state, count(*) AS jobs, extract(epoch FROM now() - min(created_at))::float8 AS oldest_seconds
FROM memory_jobs
GROUP BY state
ORDER BY state;
