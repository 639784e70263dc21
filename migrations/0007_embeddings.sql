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
            CHECK (num_nonnulls(message_id, memory_id) = 1)
        );
        -- Exact nearest neighbours among one user's vectors of one model (see recall_nearest).
        CREATE INDEX embeddings_user_model_idx ON embeddings (user_id, model);
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

        -- The user's k items of this model nearest to the query vector (pgvector's text form), by cosine,
        -- read exactly from the user's own rows. NULL query: nothing. A vector of another dimension (a
        -- server that changed what it returns under one model name) is passed over, not an error.
        CREATE FUNCTION recall_nearest(user_id uuid, model text, query text, k integer)
        RETURNS TABLE (item_id uuid, similarity float8) LANGUAGE sql STABLE AS $f$
            SELECT e.item_id, 1 - (e.embedding <=> query::vector)
            FROM embeddings AS e
            WHERE e.user_id = recall_nearest.user_id AND e.model = recall_nearest.model AND query IS NOT NULL
              AND vector_dims(e.embedding) = vector_dims(query::vector)
            ORDER BY e.embedding <=> query::vector
            LIMIT k
        $f$;

        -- Cosine similarity of the query to each of these items of the user's (those with a vector of the model).
        CREATE FUNCTION recall_similarity(user_id uuid, model text, query text, item_ids uuid[])
        RETURNS TABLE (item_id uuid, similarity float8) LANGUAGE sql STABLE AS $f$
            SELECT e.item_id, 1 - (e.embedding <=> query::vector)
            FROM embeddings AS e
            WHERE e.item_id = ANY (item_ids) AND e.user_id = recall_similarity.user_id
              AND e.model = recall_similarity.model AND query IS NOT NULL
              AND vector_dims(e.embedding) = vector_dims(query::vector)
        $f$;
    ELSE
        CREATE FUNCTION recall_nearest(user_id uuid, model text, query text, k integer)
        RETURNS TABLE (item_id uuid, similarity float8) LANGUAGE sql IMMUTABLE AS $f$
            SELECT NULL::uuid, NULL::float8 WHERE false
        $f$;
        CREATE FUNCTION recall_similarity(user_id uuid, model text, query text, item_ids uuid[])
        RETURNS TABLE (item_id uuid, similarity float8) LANGUAGE sql IMMUTABLE AS $f$
            SELECT NULL::uuid, NULL::float8 WHERE false
        $f$;
    END IF;
END
$$;
