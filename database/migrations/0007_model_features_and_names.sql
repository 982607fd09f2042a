-- 0007: what each model can do, and the names clients call it by.
--   - features: what a call may ask of the model beyond plain text (tools,
--     structured output, images); a call asking for one the model lacks is
--     refused before any hold. input_modalities: what its prompt may hold
--     (text, image). A model takes images exactly when it has both the
--     `images` feature and the `image` modality.
--   - aliases: other names the inference API resolves to the model, such as
--     claude-opus-4. A name resolves to one model at most: an alias is no other
--     model's id, bare name (the part after the slash) or alias, nor the
--     model's own bare name. A constraint trigger checks this at commit, so one
--     catalog load may move an alias from one model to another.
-- Existing rows take the defaults (no features, text only, no aliases) until
-- migrate.py loads the catalog file, in the same run.
ALTER TABLE models
    ADD COLUMN features text[] NOT NULL DEFAULT '{}'
        CONSTRAINT models_features_check CHECK (features <@ ARRAY['tools', 'structured_output', 'images']),
    ADD COLUMN input_modalities text[] NOT NULL DEFAULT '{text}'
        CONSTRAINT models_input_modalities_check
        CHECK (input_modalities <@ ARRAY['text', 'image'] AND 'text' = ANY (input_modalities)),
    ADD COLUMN aliases text[] NOT NULL DEFAULT '{}',
    ADD CONSTRAINT models_aliases_check CHECK (NOT split_part(id, '/', 2) = ANY (aliases)),
    ADD CONSTRAINT models_image_input_check
        CHECK (('images' = ANY (features)) = ('image' = ANY (input_modalities)));

CREATE FUNCTION models_names_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    clash record;
BEGIN
    SELECT a.alias, m.id AS model_id, o.id AS other_id
      INTO clash
      FROM models m
     CROSS JOIN LATERAL unnest(m.aliases) a(alias)
      JOIN models o
        ON o.id <> m.id
       AND (a.alias IN (o.id, split_part(o.id, '/', 2)) OR a.alias = ANY (o.aliases))
     WHERE NEW.id IN (m.id, o.id)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'catalog refused: the alias % of % is also a name of %',
                        clash.alias, clash.model_id, clash.other_id
              USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER models_names_unique
    AFTER INSERT OR UPDATE OF id, aliases ON models
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION models_names_check();
