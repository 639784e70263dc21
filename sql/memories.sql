-- name: save_memory(user_id, key, content)^
-- Create a memory, or (when the user already has one under this key) replace its content in
-- place; log the change either way. A NULL key never conflicts, so keyless saves always create.
WITH saved AS (
    INSERT INTO memories (user_id, key, content)
    VALUES (:user_id, :key, :content)
    ON CONFLICT (user_id, key) WHERE key IS NOT NULL
    DO UPDATE SET content = EXCLUDED.content, updated_at = now()
    -- xmax is 0 only on a freshly inserted row version: how an upsert tells insert from update.
    RETURNING id, key, content, created_at, updated_at, (xmax = 0) AS created
), logged AS (
    INSERT INTO memory_events (memory_id, user_id, event, key, content)
    SELECT id, :user_id, CASE WHEN created THEN 'created' ELSE 'updated' END, key, content
    FROM saved
)
SELECT id, key, content, created_at, updated_at, created
FROM saved;

-- name: update_memory(user_id, memory_id, content, set_key, key)^
-- Change a memory's content and/or key (set_key tells "key: null" from "key not given"); log it.
WITH changed AS (
    UPDATE memories
    SET content = coalesce(:content, content),
        key = CASE WHEN :set_key THEN :key ELSE key END,
        updated_at = now()
    WHERE id = :memory_id AND user_id = :user_id
    RETURNING id, key, content, created_at, updated_at
), logged AS (
    INSERT INTO memory_events (memory_id, user_id, event, key, content)
    SELECT id, :user_id, 'updated', key, content
    FROM changed
)
SELECT id, key, content, created_at, updated_at
FROM changed;

-- name: get_memory(user_id, memory_id)^
-- One memory of this user.
SELECT id, key, content, created_at, updated_at
FROM memories
WHERE id = :memory_id AND user_id = :user_id;

-- name: list_memories(user_id, limit)
-- The first page of the user's memories, newest first.
SELECT id, key, content, created_at, updated_at
FROM memories
WHERE user_id = :user_id
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: list_memories_after(user_id, after_created_at, after_id, limit)
-- The page of the user's memories that follows the cursor (created_at, id).
SELECT id, key, content, created_at, updated_at
FROM memories
WHERE user_id = :user_id
  AND (created_at, id) < (:after_created_at, :after_id)
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: memory_history(user_id, memory_id)
-- Every version of one memory of this user, oldest first, with where it came from.
SELECT event, key, content, at, source, message_id
FROM memory_events
WHERE memory_id = :memory_id AND user_id = :user_id
ORDER BY id;

-- name: delete_memory(user_id, memory_id)$
-- Forget one memory of this user, with its history (1, or 0 when there is none); the time is kept so that
-- a late extraction job of an older message does not write back what the user removed.
WITH forgotten AS (
    DELETE FROM memories
    WHERE id = :memory_id AND user_id = :user_id
    RETURNING id
), stamped AS (
    UPDATE users
    SET memories_forgotten_at = now()
    WHERE id = :user_id AND EXISTS (SELECT FROM forgotten)
)
SELECT count(*) FROM forgotten;

-- name: delete_all_memories(user_id)$
-- Forget every memory of this user, with their history; how many (and keep the time, as delete_memory does).
WITH forgotten AS (
    DELETE FROM memories
    WHERE user_id = :user_id
    RETURNING id
), stamped AS (
    UPDATE users
    SET memories_forgotten_at = now()
    WHERE id = :user_id AND EXISTS (SELECT FROM forgotten)
)
SELECT count(*) FROM forgotten;

-- name: recall(user_id, text, window_chat_id, window_start_seq, limit, model, embedding)
-- The user's past words (user messages in live chats) and memories most relevant to a text, best first:
-- BM25 within the user's own items, fused with cosine similarity when a query vector is given, and
-- context from neighbouring turns. Steps:
--  1. terms: the text's first 32 distinct non-stopword lexemes that the user has ever used, each with
--     its inverse document frequency among the user's items (recall_terms, kept by triggers);
--  2. candidates: items holding one of the rarest terms, taken rarest first while their document
--     frequencies add up to at most 250 (at least the rarest term), and at most 250 rows per table,
--     so a word in 50,000 of the user's messages never makes a recall read 50,000 rows; the commoner
--     terms still count in the score of every candidate. With a vector (:embedding, pgvector's text
--     form, of model :model), the user's 50 nearest items by meaning are candidates too;
--  3. score: BM25 (k1 1.2, b 0.75); with a vector, BM25 divided by the best candidate's BM25, plus
--     0.8 times the cosine similarity, so an exact match of the words still leads a paraphrase (vectors
--     of other models are never compared: such items count lexically);
--  4. context: the 30 best message candidates lend 0.3 of their score to the user's message just
--     before and just after them in the same chat (an answer is often the turn next to the words of
--     the question); without a vector a neighbour is recalled only when it shares a term with the text;
--  5. order: score plus context, a recent item getting at most 5% more (a 30-day half-life), so
--     recency breaks near-ties but never buries an exact old match.
-- Messages of window_chat_id from window_start_seq on (the recent window the responder already
-- sees) are left out; both NULL leave out nothing. Stopword-only or empty texts without a vector match nothing.
WITH query_terms AS (
    SELECT lexeme
    FROM unnest(to_tsvector('english', :text))
    ORDER BY positions[1]
    LIMIT 32
), totals AS (
    SELECT documents::float8 AS n, greatest(lexemes::float8 / greatest(documents, 1), 1) AS average_length
    FROM recall_totals
    WHERE user_id = :user_id
), terms AS (
    -- One primary-key lookup per query term.
    SELECT t.lexeme, ln(1 + (totals.n - t.documents + 0.5) / (t.documents + 0.5)) AS idf,
           sum(t.documents) OVER (ORDER BY t.documents, t.lexeme) AS running
    FROM query_terms AS q
    JOIN recall_terms AS t ON t.user_id = :user_id AND t.lexeme = q.lexeme
    CROSS JOIN totals
    WHERE t.documents > 0
), weights AS (
    SELECT coalesce(array_agg(lexeme), '{}') AS lexemes, coalesce(array_agg(idf), '{}') AS idfs,
           coalesce((SELECT average_length FROM totals), 1) AS average_length,
           -- Each seed lexeme is quoted for tsquery syntax ('' and \\ escapes), then OR-ed: no user
           -- text is ever parsed as tsquery operators.
           string_agg('''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''', ' | ')
               FILTER (WHERE running <= 250 OR running = (SELECT min(running) FROM terms))::tsquery AS seeds
    FROM terms
), nearest AS (
    SELECT item_id, similarity FROM recall_nearest(:user_id, :model, :embedding, 50)
), candidates AS (
    -- (SELECT seeds FROM weights) is computed once, before the scans, so the GIN indexes can use it.
    (SELECT 'message' AS source, m.id, m.chat_id, m.seq, m.content, m.created_at, m.created_at AS as_of,
            m.search_vector
     FROM messages AS m
     WHERE m.user_id = :user_id
       AND m.role = 'user'
       AND m.search_vector @@ (SELECT seeds FROM weights)
       AND (m.chat_id IS DISTINCT FROM :window_chat_id::uuid OR m.seq < :window_start_seq::bigint)
       -- The user's soft-deleted chats are few: hashed once, not a lookup per candidate.
       AND m.chat_id NOT IN (SELECT id FROM chats WHERE user_id = :user_id AND deleted_at IS NOT NULL)
     LIMIT 250)
    UNION
    (SELECT 'memory', mem.id, NULL, NULL, mem.content, mem.created_at, mem.updated_at, mem.search_vector
     FROM memories AS mem
     WHERE mem.user_id = :user_id
       AND mem.search_vector @@ (SELECT seeds FROM weights)
     LIMIT 250)
    UNION
    SELECT 'message', m.id, m.chat_id, m.seq, m.content, m.created_at, m.created_at, m.search_vector
    FROM nearest AS n
    JOIN messages AS m ON m.id = n.item_id
    WHERE m.user_id = :user_id
      AND m.role = 'user'
      AND (m.chat_id IS DISTINCT FROM :window_chat_id::uuid OR m.seq < :window_start_seq::bigint)
      AND m.chat_id NOT IN (SELECT id FROM chats WHERE user_id = :user_id AND deleted_at IS NOT NULL)
    UNION
    SELECT 'memory', mem.id, NULL, NULL, mem.content, mem.created_at, mem.updated_at, mem.search_vector
    FROM nearest AS n
    JOIN memories AS mem ON mem.id = n.item_id
    WHERE mem.user_id = :user_id
), lexical AS (
    SELECT c.*, bm25.relevance
    FROM candidates AS c, weights AS w, recall_bm25(c.search_vector, w.lexemes, w.idfs, w.average_length) AS bm25
), scored AS (
    SELECT l.*, l.relevance > 0 AS matched,
           CASE WHEN :embedding::text IS NULL THEN l.relevance
                ELSE l.relevance / coalesce(nullif((SELECT max(relevance) FROM lexical), 0), 1)
                     + 0.8 * coalesce(s.similarity, 0)
           END AS score
    FROM lexical AS l
    LEFT JOIN LATERAL recall_similarity(:user_id, :model, :embedding, l.id) AS s ON true
), lenders AS (
    SELECT chat_id, seq, score
    FROM scored
    WHERE source = 'message'
    ORDER BY score DESC
    LIMIT 30
), neighbours AS (
    -- The user's messages right before and after each lender, read along (chat_id, seq).
    SELECT n.id, n.chat_id, n.content, n.created_at, bm25.relevance, l.score AS lent
    FROM lenders AS l
    CROSS JOIN LATERAL (
        (SELECT m.id, m.chat_id, m.content, m.created_at, m.search_vector
         FROM messages AS m
         WHERE m.chat_id = l.chat_id AND m.seq < l.seq AND m.role = 'user'
         ORDER BY m.seq DESC
         LIMIT 1)
        UNION ALL
        (SELECT m.id, m.chat_id, m.content, m.created_at, m.search_vector
         FROM messages AS m
         WHERE m.chat_id = l.chat_id AND m.seq > l.seq AND m.role = 'user'
           AND (m.chat_id IS DISTINCT FROM :window_chat_id::uuid OR m.seq < :window_start_seq::bigint)
         ORDER BY m.seq
         LIMIT 1)
    ) AS n
    CROSS JOIN weights AS w
    CROSS JOIN LATERAL recall_bm25(n.search_vector, w.lexemes, w.idfs, w.average_length) AS bm25
), neighbours_scored AS (
    SELECT n.*, n.relevance > 0 AS matched,
           CASE WHEN :embedding::text IS NULL THEN n.relevance
                ELSE n.relevance / coalesce(nullif((SELECT max(relevance) FROM lexical), 0), 1)
                     + 0.8 * coalesce(s.similarity, 0)
           END AS score
    FROM neighbours AS n
    LEFT JOIN LATERAL recall_similarity(:user_id, :model, :embedding, n.id) AS s ON true
), pooled AS (
    SELECT source, id, chat_id, content, created_at, as_of, matched, score, 0::float8 AS lent
    FROM scored
    UNION ALL
    SELECT 'message', id, chat_id, content, created_at, created_at, matched, score, lent
    FROM neighbours_scored
), ranked AS (
    -- Without a vector only items that share a term with the text are recalled; their neighbours'
    -- scores only reorder them.
    SELECT source, id, chat_id, content, created_at, as_of, max(score) + 0.3 * max(lent) AS score
    FROM pooled
    GROUP BY source, id, chat_id, content, created_at, as_of
    HAVING bool_or(matched) OR (:embedding::text IS NOT NULL AND max(score) > 0)
)
SELECT r.source, r.id, r.chat_id, r.content, r.created_at, r.score,
       -- Looked up for the returned rows only, after the limit.
       (SELECT c.title FROM chats AS c WHERE c.id = r.chat_id) AS chat_title
FROM (
    SELECT source, id, chat_id, content, created_at,
           -- float8, not numeric: numeric power() costs more than the ranking itself. The exponent is capped
           -- (0.5^1000 is nothing already): an item imported with a date centuries back would underflow float8.
           score * (1 + 0.05 * power(0.5, least(extract(epoch FROM now() - as_of)::float8 / (30 * 86400), 1000)))
               AS score
    FROM ranked
    ORDER BY score DESC, created_at DESC, id
    LIMIT :limit
) AS r
ORDER BY r.score DESC, r.created_at DESC, r.id;

-- name: add_extracted_memory(user_id, content, message_id)^
-- A memory extraction learned from one of the user's messages, logged with that message as its source.
WITH saved AS (
    INSERT INTO memories (user_id, content)
    VALUES (:user_id, :content)
    RETURNING id, content
), logged AS (
    INSERT INTO memory_events (memory_id, user_id, event, content, source, message_id)
    SELECT id, :user_id, 'created', content, 'extraction', :message_id
    FROM saved
)
SELECT id, NULL::text AS key, content FROM saved;

-- name: update_extracted_memory(user_id, memory_id, content, message_id)^
-- Extraction restates a memory of this user (same id, key kept); logged with the message it came from.
WITH changed AS (
    UPDATE memories
    SET content = :content, updated_at = now()
    WHERE id = :memory_id AND user_id = :user_id
    RETURNING id, key, content
), logged AS (
    INSERT INTO memory_events (memory_id, user_id, event, key, content, source, message_id)
    SELECT id, :user_id, 'updated', key, content, 'extraction', :message_id
    FROM changed
)
SELECT id, key, content FROM changed;

-- name: delete_extracted_memory(user_id, memory_id)!
-- Extraction found a memory of this user no longer true: forget it with its history.
DELETE FROM memories
WHERE id = :memory_id AND user_id = :user_id;

-- name: similar_memories(user_id, text, limit, model, embedding)
-- The user's memories most like a text, best first, for memory extraction to show: those sharing a word
-- with it (ts_rank_cd over an OR of its lexemes, already stemmed, so matched as they are) and, with a
-- query vector, the nearest in meaning; fused as recall fuses them (lexical rank over the best one, plus
-- 0.8 x cosine similarity). Only the memories table and its own index: cheap beside a full recall.
WITH words AS (
    SELECT to_tsquery('simple', string_agg('''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''',
                                           ' | ')) AS query
    FROM unnest(tsvector_to_array(to_tsvector('english', :text))) AS lexeme
), lexical AS (
    SELECT m.id, ts_rank_cd(m.search_vector, words.query) AS rank
    FROM memories AS m, words
    WHERE m.user_id = :user_id AND words.query IS NOT NULL AND m.search_vector @@ words.query
    ORDER BY rank DESC
    LIMIT 50
), nearest AS (
    SELECT n.item_id AS id, n.similarity
    FROM recall_nearest(:user_id, :model, :embedding, 100) AS n
    JOIN memories AS m ON m.id = n.item_id AND m.user_id = :user_id
), fused AS (
    SELECT coalesce(l.id, n.id) AS id,
           coalesce(l.rank / nullif(max(l.rank) OVER (), 0), 0) + 0.8 * coalesce(n.similarity, 0) AS score
    FROM lexical AS l
    FULL JOIN nearest AS n ON n.id = l.id
)
SELECT m.id, m.key, m.content
FROM fused
JOIN memories AS m ON m.id = fused.id
ORDER BY fused.score DESC, m.created_at DESC, m.id
LIMIT :limit;
