-- Language models, the model each chat uses, usage per assistant message, and monthly token counters.
-- depends: 0002_memory

CREATE TABLE models (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The name sent to the provider as "model" (e.g. llama3.2, gpt-4o-mini).
    name                      text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- "offline": the built-in responder; "openai": the OpenAI-compatible API at MEMLAYER_LLM_BASE_URL.
    provider                  text NOT NULL CHECK (provider IN ('offline', 'openai')),
    context_window            integer NOT NULL CHECK (context_window >= 512),
    input_price_per_million   numeric(12, 6) NOT NULL DEFAULT 0 CHECK (input_price_per_million >= 0),
    output_price_per_million  numeric(12, 6) NOT NULL DEFAULT 0 CHECK (output_price_per_million >= 0),
    is_enabled                boolean NOT NULL DEFAULT true,
    created_at                timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT models_name_key UNIQUE (name)
);

-- The built-in responder is always there; `memlayer models disable offline` hides it.
INSERT INTO models (name, provider, context_window) VALUES ('offline', 'offline', 128000);

-- NULL: the service's default model (MEMLAYER_LLM_MODEL, or offline when no provider is configured).
ALTER TABLE chats ADD COLUMN model text REFERENCES models (name);

-- Usage of each assistant message (NULL on user messages and on replies stored before this migration).
ALTER TABLE messages
    ADD COLUMN model             text,
    ADD COLUMN prompt_tokens     integer CHECK (prompt_tokens >= 0),
    ADD COLUMN completion_tokens integer CHECK (completion_tokens >= 0),
    ADD COLUMN cost              numeric(20, 10) CHECK (cost >= 0);

-- Serves "GET /usage": a user's assistant messages in a time range, read from the index alone.
CREATE INDEX messages_usage_idx
    ON messages (user_id, created_at)
    INCLUDE (model, prompt_tokens, completion_tokens, cost)
    WHERE role = 'assistant';

-- Tokens charged per user and calendar month (UTC): the row a send locks to enforce the quota.
CREATE TABLE monthly_usage (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    period  date NOT NULL,
    tokens  bigint NOT NULL DEFAULT 0 CHECK (tokens >= 0),
    PRIMARY KEY (user_id, period)
);
