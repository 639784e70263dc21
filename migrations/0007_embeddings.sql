-- Recall by meaning: a vector per user message and memory, where the server has pgvector.
-- depends: 0006_recall_statistics

-- The recall query calls recall_nearest and recall_similarity on every server. With pgvector they read
-- the embeddings table; without it they are stubs that find nothing, so the one recall query runs
-- lexical-only there (and `memlayer serve` refuses an embedding model on such a server).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'vector') THEN
        RAISE NOTICE 'pgvector is not available on this server: recall stays lexical-only';
    ELSE
        BEGIN
            CREATE EXTENSION IF NOT EXISTS vector;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'not allowed to create the vector extension: recall stays lexical-only';
        END;
    END IF;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'vector') THEN
        -- One row per embedded item; model says which model made the vector, and only vectors of the
        -- configured model are ever compared with a query. The dimension is left open, so that a model
        -- change needs no migration (memlayer embed re-embeds in place).
        CREATE TABLE embeddings (
            user_id    uuid   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            message_id uuid   UNIQUE REFERENCES messages (id) ON DELETE CASCADE,
            memory_id  uuid   UNIQUE REFERENCES memories (id) ON DELETE CASCADE,
            item_id    uuid   NOT NULL GENERATED ALWAYS AS (coalesce(message_id, memory_id)) STORED,
            model      text   NOT NULL,
            embedding  vector NOT NULL,
            -- One bit per dimension (its sign): what the first pass of recall_nearest compares.
            bits       bit varying NOT NULL GENERATED ALWAYS AS (binary_quantize(embedding)::bit varying) STORED,
            CHECK (num_nonnulls(message_id, memory_id) = 1)
        );
        -- A user's vectors of one model, with their bits: recall_nearest's first pass reads only this
        -- index (an index-only scan of about 70 bytes a vector), never the 1.5 kB rows.
        CREATE INDEX embeddings_user_model_idx ON embeddings (user_id, model) INCLUDE (item_id, bits);
        CREATE UNIQUE INDEX embeddings_item_idx ON embeddings (item_id);

        -- A memory whose words change loses its vector; the write that changed it stores the new one.
        CREATE FUNCTION memories_forget_stale_embedding() RETURNS trigger LANGUAGE plpgsql AS $f$
        BEGIN
            DELETE FROM embeddings WHERE memory_id = NEW.id;
            RETURN NULL;
        END
        $f$;
        CREATE TRIGGER memories_forget_stale_embedding
            AFTER UPDATE OF key, content ON memories
            FOR EACH ROW WHEN (OLD.key IS DISTINCT FROM NEW.key OR OLD.content IS DISTINCT FROM NEW.content)
            EXECUTE FUNCTION memories_forget_stale_embedding();

        -- The user's k items of this model nearest to the query vector (pgvector's text form), by cosine.
        -- Two passes over the user's own rows only: the 10 k nearest by Hamming distance between the
        -- vectors' sign bits (from the covering index), then those re-ranked by exact cosine. A user with
        -- up to 10 k vectors gets the exact answer; a heavy user's first pass reads 70 bytes a vector
        -- instead of 1.5 kB (README, make bench-vectors). NULL query: nothing. Vectors of another
        -- dimension (a server that changed what it returns under one model name) are passed over.
        CREATE FUNCTION recall_nearest(user_id uuid, model text, query text, k integer)
        RETURNS TABLE (item_id uuid, similarity float8) LANGUAGE sql STABLE AS $f$
            SELECT e.item_id, 1 - (e.embedding <=> query::vector)
            FROM (SELECT c.item_id
                  FROM embeddings AS c
                  WHERE c.user_id = recall_nearest.user_id AND c.model = recall_nearest.model
                    AND query IS NOT NULL AND length(c.bits) = vector_dims(query::vector)
                  ORDER BY c.bits <~> binary_quantize(query::vector)::bit varying
                  LIMIT 10 * k) AS coarse
            JOIN embeddings AS e ON e.item_id = coarse.item_id
            ORDER BY e.embedding <=> query::vector
            LIMIT k
        $f$;

        -- Cosine similarity of the query to one item of the user's (no row when it has no vector of the
        -- model). Called per candidate with plain arguments, so the planner inlines it to an index lookup.
        CREATE FUNCTION recall_similarity(user_id uuid, model text, query text, item_id uuid)
        RETURNS TABLE (similarity float8) LANGUAGE sql STABLE AS $f$
            SELECT 1 - (e.embedding <=> query::vector)
            FROM embeddings AS e
            WHERE e.item_id = recall_similarity.item_id AND e.user_id = recall_similarity.user_id
              AND e.model = recall_similarity.model AND query IS NOT NULL
              AND vector_dims(e.embedding) = vector_dims(query::vector)
        $f$;
    ELSE
        CREATE FUNCTION recall_nearest(user_id uuid, model text, query text, k integer)
        RETURNS TABLE (item_id uuid, similarity float8) LANGUAGE sql IMMUTABLE AS $f$
            SELECT NULL::uuid, NULL::float8 WHERE false
        $f$;
        CREATE FUNCTION recall_similarity(user_id uuid, model text, query text, item_id uuid)
        RETURNS TABLE (similarity float8) LANGUAGE sql IMMUTABLE AS $f$
            SELECT NULL::float8 WHERE false
        $f$;
    END IF;
END
$$;
