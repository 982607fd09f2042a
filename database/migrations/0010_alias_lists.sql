-- 0010: an alias that stands for an ordered list of models (catalog.json's
-- `alias_lists`). A call naming it is a call naming its first model with the
-- others as fallbacks, leaving out any the caller cannot use for it.
--   - Its name is no model's id, bare name or alias, so a name still resolves
--     one way; constraint triggers on both tables check this at commit, so one
--     catalog load may move a name from a model to a list.
--   - Its models are ids of the catalog's models, each once.
CREATE TABLE alias_lists (
    alias      text PRIMARY KEY CHECK (alias ~ '^[A-Za-z0-9._:-]+$' AND length(alias) <= 100),
    models     text[] NOT NULL CHECK (cardinality(models) BETWEEN 1 AND 6),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION alias_lists_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    problem text;
BEGIN
    SELECT CASE WHEN m.id IS NULL THEN format('the alias list %s names %s, which is no model', l.alias, listed.id)
                ELSE format('the alias list %s names %s twice', l.alias, listed.id) END
      INTO problem
      FROM alias_lists l
     CROSS JOIN LATERAL unnest(l.models) WITH ORDINALITY AS listed(id, place)
      LEFT JOIN models m ON m.id = listed.id
     WHERE l.alias = NEW.alias
       AND (m.id IS NULL OR listed.id = ANY (l.models[:listed.place - 1]))
     LIMIT 1;
    IF problem IS NULL THEN
        SELECT format('the alias list %s is also a name of %s', l.alias, m.id)
          INTO problem
          FROM alias_lists l
          JOIN models m ON l.alias IN (m.id, split_part(m.id, '/', 2)) OR l.alias = ANY (m.aliases)
         WHERE l.alias = NEW.alias
         LIMIT 1;
    END IF;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'catalog refused: %', problem USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER alias_lists_valid
    AFTER INSERT OR UPDATE ON alias_lists
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION alias_lists_check();

-- A model's new id or alias may not take a list's name.
CREATE FUNCTION models_list_names_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    clash text;
BEGIN
    SELECT l.alias INTO clash
      FROM alias_lists l
     WHERE l.alias IN (NEW.id, split_part(NEW.id, '/', 2)) OR l.alias = ANY (NEW.aliases)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'catalog refused: % is the name of an alias list, and also a name of %', clash, NEW.id
              USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER models_list_names_unique
    AFTER INSERT OR UPDATE OF id, aliases ON models
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION models_list_names_check();

GRANT SELECT ON alias_lists TO app_user;
