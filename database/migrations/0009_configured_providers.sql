-- 0009: providers are configuration (PROVIDERS_FILE, app/providers/registry.py).
-- A model's provider, and a stored key's, may be any configured provider's
-- name: the service checks the name against its configuration, the schema
-- keeps its form. A model id's prefix stays its provider's name.
ALTER TABLE models
    DROP CONSTRAINT models_provider_check,
    ADD CONSTRAINT models_provider_check CHECK (provider ~ '^[a-z0-9-]{1,32}$');
ALTER TABLE api_keys
    DROP CONSTRAINT api_keys_provider_check,
    ADD CONSTRAINT api_keys_provider_check CHECK (provider ~ '^[a-z0-9-]{1,32}$' AND provider <> 'local');

-- A model's deployments: where it is served, in the order calls try them,
-- each a configured provider and the model's name there. Empty: one, its own
-- provider under its id's name.
ALTER TABLE models
    ADD COLUMN deployments jsonb NOT NULL DEFAULT '[]'
        CONSTRAINT models_deployments_check CHECK (jsonb_typeof(deployments) = 'array');

-- Whether a call made with the user's own key may fall back to another
-- provider's house key, which the user then pays the catalog price for.
ALTER TABLE user_preferences
    ADD COLUMN house_key_fallback boolean NOT NULL DEFAULT false;
