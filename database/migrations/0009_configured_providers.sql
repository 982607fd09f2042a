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
