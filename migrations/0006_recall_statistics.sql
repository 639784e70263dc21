-- Per-user term statistics for BM25 recall: how many of a user's items (their own messages and their
-- memories) contain each lexeme, and how many items of what average length they have. Kept by
-- statement-level triggers in the transaction of the writes, so a recall reads a handful of rows
-- instead of counting matches.
-- depends: 0005_gin_pending_list

CREATE TABLE recall_terms (
    user_id   uuid    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    lexeme    text    NOT NULL,
    documents integer NOT NULL,
    PRIMARY KEY (user_id, lexeme)
);

CREATE TABLE recall_totals (
    user_id   uuid   PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    documents bigint NOT NULL,
    lexemes   bigint NOT NULL  -- the items' lengths (distinct lexemes each) added up, for the average
);

-- Count items in (delta 1) or out (delta -1). Rows are upserted in key order, so concurrent writers
-- of one user take the row locks in the same order and cannot deadlock on them. Removals only
-- update: when a user is erased, their statistics may already be gone with them.
CREATE FUNCTION recall_statistics_change(user_ids uuid[], vectors tsvector[], delta integer)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF delta > 0 THEN
        INSERT INTO recall_terms AS t (user_id, lexeme, documents)
        SELECT item.user_id, term.lexeme, count(*)
        FROM unnest(user_ids, vectors) AS item (user_id, vector),
             unnest(tsvector_to_array(item.vector)) AS term (lexeme)
        GROUP BY item.user_id, term.lexeme
        ORDER BY item.user_id, term.lexeme
        ON CONFLICT (user_id, lexeme) DO UPDATE SET documents = t.documents + EXCLUDED.documents;

        INSERT INTO recall_totals AS t (user_id, documents, lexemes)
        SELECT item.user_id, count(*), sum(length(item.vector))
        FROM unnest(user_ids, vectors) AS item (user_id, vector)
        GROUP BY item.user_id
        ORDER BY item.user_id
        ON CONFLICT (user_id) DO UPDATE
        SET documents = t.documents + EXCLUDED.documents, lexemes = t.lexemes + EXCLUDED.lexemes;
    ELSE
        UPDATE recall_terms AS t
        SET documents = t.documents - gone.documents
        FROM (SELECT item.user_id, term.lexeme, count(*) AS documents
              FROM unnest(user_ids, vectors) AS item (user_id, vector),
                   unnest(tsvector_to_array(item.vector)) AS term (lexeme)
              GROUP BY item.user_id, term.lexeme) AS gone
        WHERE t.user_id = gone.user_id AND t.lexeme = gone.lexeme;

        UPDATE recall_totals AS t
        SET documents = t.documents - gone.documents, lexemes = t.lexemes - gone.lexemes
        FROM (SELECT item.user_id, count(*) AS documents, sum(length(item.vector)) AS lexemes
              FROM unnest(user_ids, vectors) AS item (user_id, vector)
              GROUP BY item.user_id) AS gone
        WHERE t.user_id = gone.user_id;
    END IF;
END
$$;

-- Messages are only ever inserted (they go when their user does), and only the user's own are recalled.
CREATE FUNCTION messages_recall_statistics() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM recall_statistics_change(array_agg(user_id), array_agg(search_vector), 1)
    FROM added WHERE role = 'user' HAVING count(*) > 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER messages_recall_statistics
    AFTER INSERT ON messages REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION messages_recall_statistics();

-- Memories are created, rewritten and forgotten; a trigger may name only the transition tables of its
-- own event, hence one function that asks which event fired it.
CREATE FUNCTION memories_recall_statistics() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM recall_statistics_change(array_agg(user_id), array_agg(search_vector), -1)
        FROM removed HAVING count(*) > 0;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM recall_statistics_change(array_agg(user_id), array_agg(search_vector), 1)
        FROM added HAVING count(*) > 0;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER memories_recall_statistics_insert
    AFTER INSERT ON memories REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION memories_recall_statistics();
CREATE TRIGGER memories_recall_statistics_update
    AFTER UPDATE ON memories REFERENCING OLD TABLE AS removed NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION memories_recall_statistics();
CREATE TRIGGER memories_recall_statistics_delete
    AFTER DELETE ON memories REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION memories_recall_statistics();

-- The BM25 score of one item for the query terms (their inverse document frequencies given), with
-- k1 = 1.2 and b = 0.75, the textbook values; an item's length is its count of distinct lexemes.
-- setweight + ts_filter keep only the query's lexemes before unnesting: one C pass over the vector
-- instead of a row per lexeme. A one-row table function, so that the planner inlines it where it is
-- called (FROM ..., LATERAL recall_bm25(...)); a scalar SQL function would cost an executor per row.
CREATE FUNCTION recall_bm25(vector tsvector, terms text[], idfs float8[], average_length float8)
RETURNS TABLE (relevance float8) LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(sum(q.idf * f.tf * 2.2 / (f.tf + 1.2 * (0.25 + 0.75 * length(vector) / average_length))), 0)
    FROM unnest(ts_filter(setweight(vector, 'A', terms), '{a}')) AS v (lexeme, positions, weights)
    CROSS JOIN LATERAL (SELECT coalesce(array_length(v.positions, 1), 1)::float8 AS tf) AS f
    JOIN unnest(terms, idfs) AS q (lexeme, idf) ON q.lexeme = v.lexeme
$$;

-- What is already there.
DO $$
BEGIN
    PERFORM recall_statistics_change(array_agg(user_id), array_agg(search_vector), 1)
    FROM (SELECT user_id, search_vector FROM messages WHERE role = 'user'
          UNION ALL
          SELECT user_id, search_vector FROM memories) AS items
    HAVING count(*) > 0;
END
$$;
