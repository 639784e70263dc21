-- name: usage_by_model(user_id, start, end)
-- The user's assistant messages in [start, end) summed per model, then the total (is_total, always
-- present, zeros when there is nothing); an index-only read of messages_usage_idx.
SELECT GROUPING(model) = 1 AS is_total,
       model,
       count(*) AS messages,
       coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens,
       coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint AS total_tokens,
       coalesce(sum(cost), 0) AS cost
FROM messages
WHERE user_id = :user_id
  AND role = 'assistant'
  AND created_at >= :start
  AND created_at < :end
  AND model IS NOT NULL
GROUP BY ROLLUP (model)
ORDER BY is_total, model;

-- name: tokens_used(user_id, period)$
-- Tokens charged to the user in the period (0 when nothing was).
SELECT coalesce((SELECT tokens FROM monthly_usage WHERE user_id = :user_id AND period = :period), 0);

-- name: record_memory_usage(user_id, message_id, model, prompt_tokens, completion_tokens, cost, period)!
-- Bill an extraction like a reply: its own usage row, and its tokens added to the user's period (the
-- quota was checked before the model was asked; what it spent is charged even if it went over).
WITH used AS (
    INSERT INTO memory_usage (user_id, message_id, model, prompt_tokens, completion_tokens, cost)
    VALUES (:user_id, :message_id, :model, :prompt_tokens, :completion_tokens, :cost)
)
INSERT INTO monthly_usage AS u (user_id, period, tokens)
VALUES (:user_id, :period, CAST(:prompt_tokens AS integer) + CAST(:completion_tokens AS integer))
ON CONFLICT (user_id, period) DO UPDATE
SET tokens = u.tokens + EXCLUDED.tokens;

-- name: memory_usage_totals(user_id, start, end)^
-- The user's extraction usage in [start, end), summed (zeros when there is none).
SELECT count(*) AS extractions,
       coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens,
       coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint AS total_tokens,
       coalesce(sum(cost), 0) AS cost
FROM memory_usage
WHERE user_id = :user_id AND created_at >= :start AND created_at < :end;
