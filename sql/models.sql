-- name: list_models()
-- Every model, enabled or not, by name.
SELECT id, name, provider, context_window, input_price_per_million, output_price_per_million, is_enabled
FROM models
ORDER BY name;

-- name: list_enabled_models()
-- The models users may choose, by name.
SELECT id, name, provider, context_window, input_price_per_million, output_price_per_million, is_enabled
FROM models
WHERE is_enabled
ORDER BY name;

-- name: get_model(name)^
-- One model by name.
SELECT id, name, provider, context_window, input_price_per_million, output_price_per_million, is_enabled
FROM models
WHERE name = :name;

-- name: add_model(name, provider, context_window, input_price_per_million, output_price_per_million)^
-- Add a model (provider 'openai' unless given), or enable and update the one with this name
-- (NULL settings keep their current value).
INSERT INTO models AS m (name, provider, context_window, input_price_per_million, output_price_per_million)
VALUES (:name, coalesce(:provider, 'openai'), coalesce(:context_window, 8192),
        coalesce(:input_price_per_million, 0), coalesce(:output_price_per_million, 0))
ON CONFLICT (name) DO UPDATE
SET provider = coalesce(:provider, m.provider),
    context_window = coalesce(:context_window, m.context_window),
    input_price_per_million = coalesce(:input_price_per_million, m.input_price_per_million),
    output_price_per_million = coalesce(:output_price_per_million, m.output_price_per_million),
    is_enabled = true
RETURNING id, name, provider, context_window, input_price_per_million, output_price_per_million, is_enabled;

-- name: seed_model(name, provider, context_window)!
-- Add a model from configuration unless one with this name exists (an operator's changes win).
INSERT INTO models (name, provider, context_window)
VALUES (:name, :provider, :context_window)
ON CONFLICT (name) DO NOTHING;

-- name: set_model_enabled(name, is_enabled)^
-- Enable or disable a model; chats that chose a disabled one must choose again before sending.
UPDATE models
SET is_enabled = :is_enabled
WHERE name = :name
RETURNING id, name, provider, context_window, input_price_per_million, output_price_per_million, is_enabled;
