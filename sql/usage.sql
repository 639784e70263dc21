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
