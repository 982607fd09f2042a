"""Each vocabulary and range is written twice, once in Python (database/vocab.py
and the request models) and once as a CHECK in the schema; these tests read the
CHECKs back from the migrated database and hold the two to each other."""
import re
import typing

import pytest
from app.schemas import EMAIL_MAX_LENGTH, PreferencesBody, RatingRequest, Username
from app.schemas.openai_format import MAX_FALLBACK_MODELS
from database.vocab import (ALIAS_LIST_MAX_MODELS, FEATURES, INPUT_MODALITIES, MODEL_ALIAS_PATTERN, MODEL_ID_MAX_LENGTH, MODEL_ID_PATTERN,
                            PROVIDER_NAME_PATTERN, PROVIDERS, THEMES, TRANSACTION_TYPES, USAGE_BUCKETS)

CHECK = """
    SELECT pg_get_constraintdef(c.oid)
      FROM pg_constraint c
     WHERE c.conrelid = %(table)s::regclass
       AND c.contype = 'c'
       AND c.conname = %(table)s || '_' || %(column)s || '_check'
"""


def check_of(database, table, column):
    """The CHECK written on `table`'s `column` (PostgreSQL names it table_column_check)."""
    found = database.query(CHECK, {"table": table, "column": column})
    assert len(found) == 1, f"no CHECK on {table}.{column}"
    return found[0][0]


def allowed_words(definition):
    """The values of an `IN (...)` CHECK, as PostgreSQL prints it (= ANY (ARRAY['a'::text, ...]))."""
    return set(re.findall(r"'([^']*)'::text", definition))


def bounds(definition):
    """(low, high) of a BETWEEN or >=/<= CHECK, as PostgreSQL prints it."""
    low = re.search(r">= (\d+)", definition)
    high = re.search(r"<= (\d+)", definition)
    return int(low[1]) if low else None, int(high[1]) if high else None


def constraint(annotated, name):
    """A length or bound constraint of an Annotated pydantic type."""
    for item in typing.get_args(annotated)[1:]:
        for constraint in getattr(item, "metadata", []):
            if hasattr(constraint, name):
                return getattr(constraint, name)
    raise LookupError(name)


@pytest.mark.parametrize("table, column, python", [
    ("models", "features", set(FEATURES)),
    ("models", "input_modalities", set(INPUT_MODALITIES)),
    ("transactions", "type", set(TRANSACTION_TYPES)),
    ("user_preferences", "theme", set(THEMES)),
])
def test_word_lists_agree(database, table, column, python):
    assert allowed_words(check_of(database, table, column)) == python


@pytest.mark.parametrize("table", ["models", "api_keys"])
def test_a_providers_name_is_written_alike(database, table):
    """Providers are configuration: the schema holds their names' form only."""
    assert f"'{PROVIDER_NAME_PATTERN}'::text" in check_of(database, table, "provider")
    assert all(re.fullmatch(PROVIDER_NAME_PATTERN, name) for name in PROVIDERS)


def test_usage_buckets_agree(database):
    assert bounds(check_of(database, "model_usage_stats", "bucket")) == (0, USAGE_BUCKETS - 1)


def test_rating_range_agrees(database):
    rating = RatingRequest.model_fields["rating"].metadata
    python = tuple(next(getattr(m, name) for m in rating if hasattr(m, name)) for name in ("ge", "le"))
    assert bounds(check_of(database, "model_ratings", "rating")) == python


def test_user_lengths_agree(database):
    assert bounds(check_of(database, "users", "username")) == (
        constraint(Username, "min_length"), constraint(Username, "max_length"))
    assert bounds(check_of(database, "users", "email"))[1] == EMAIL_MAX_LENGTH


def test_the_request_models_use_the_vocabulary():
    assert typing.get_args(PreferencesBody.model_fields["theme"].annotation) == THEMES


def test_model_id_form_agrees(database):
    definition = check_of(database, "models", "id")
    assert f"'{MODEL_ID_PATTERN}'::text" in definition
    assert f"length(id) <= {MODEL_ID_MAX_LENGTH}" in definition


def test_an_alias_is_written_like_a_model_ids_name():
    assert MODEL_ID_PATTERN.split("/", 1)[1] == MODEL_ALIAS_PATTERN[1:]


def test_an_alias_list_is_named_like_an_alias_and_names_as_many_models_as_a_call(database):
    definition = check_of(database, "alias_lists", "alias")
    assert f"'{MODEL_ALIAS_PATTERN}'::text" in definition and f"length(alias) <= {MODEL_ID_MAX_LENGTH}" in definition
    assert bounds(check_of(database, "alias_lists", "models")) == (1, ALIAS_LIST_MAX_MODELS)
    assert ALIAS_LIST_MAX_MODELS == 1 + MAX_FALLBACK_MODELS


def test_the_images_feature_and_the_image_modality_are_the_words_the_schema_pairs(database):
    # models_image_input_check: a model has both or neither.
    assert "images" in FEATURES and "image" in INPUT_MODALITIES
    assert allowed_words(check_of(database, "models", "image_input")) == {"images", "image"}
