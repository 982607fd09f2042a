"""The model catalog file (catalog.json, or one given to `flask catalog load`),
validated whole before anything is written (a bad entry refuses the file), and
its models written into the models table."""
import json
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Literal

from psycopg2.extras import Json
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, ValidationError, model_validator

from database.vocab import (ALIAS_LIST_MAX_MODELS, CAPABILITIES, FEATURES, INPUT_MODALITIES, MODEL_ALIAS_PATTERN,
                            MODEL_ID_MAX_LENGTH, MODEL_ID_PATTERN, PROVIDER_NAME_PATTERN)

# A cost is tokens × price / 1,000,000 and the ledger keeps 10 decimals, so a
# price may have at most 4: every cost is then stored exactly.
PRICE_DECIMALS = 4
MAX_PRICE = Decimal(100_000)


class CatalogError(ValueError):
    pass


def _price(value):
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise ValueError("must be a decimal string such as \"2.50\"")
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise ValueError("must be a decimal string such as \"2.50\"") from None
    if not price.is_finite() or price < 0:
        raise ValueError("must be zero or more")
    if price > MAX_PRICE:
        raise ValueError(f"must be at most {MAX_PRICE}")
    if price != round(price, PRICE_DECIMALS):
        raise ValueError(f"must have at most {PRICE_DECIMALS} decimal places")
    return price


def _distinct(values):
    if len(set(values)) != len(values):
        raise ValueError("must not repeat a value")
    return values


def _with_text(modalities):
    if "text" not in modalities:
        raise ValueError("must include text: every model takes text")
    return modalities


Price = Annotated[Decimal, PlainValidator(_price)]
Alias = Annotated[str, Field(max_length=MODEL_ID_MAX_LENGTH, pattern=MODEL_ALIAS_PATTERN)]


class Deployment(BaseModel):
    """Where a model is served: a configured provider, and the model's name there."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Annotated[str, Field(pattern=PROVIDER_NAME_PATTERN)]
    model: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^\S+$")]


class CatalogModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(max_length=MODEL_ID_MAX_LENGTH, pattern=MODEL_ID_PATTERN)]
    provider: Annotated[str, Field(pattern=PROVIDER_NAME_PATTERN)]  # a configured one (checked where it is known)
    name: Annotated[str, Field(min_length=1, max_length=100)]
    description: Annotated[str, Field(max_length=2000)] = ""
    context_window: Annotated[int, Field(gt=0, le=100_000_000, strict=True)]
    max_output_tokens: Annotated[int, Field(gt=0, strict=True)]
    input_price_per_mtok: Price
    output_price_per_mtok: Price
    # A prompt cache's prices: its reads, its 5-minute writes and its 1-hour
    # writes; null where the model has none (see _consistent).
    cache_read_price_per_mtok: Price | None = None
    cache_write_price_per_mtok: Price | None = None
    cache_write_1h_price_per_mtok: Price | None = None
    prices_as_of: date
    capabilities: Annotated[list[Literal[CAPABILITIES]], AfterValidator(_distinct)] = []
    features: Annotated[list[Literal[FEATURES]], AfterValidator(_distinct)] = []
    input_modalities: Annotated[list[Literal[INPUT_MODALITIES]], AfterValidator(_distinct),
                                AfterValidator(_with_text)] = ["text"]
    # Other names the inference API knows the model by (see CatalogFile._names_unique).
    aliases: Annotated[list[Alias], AfterValidator(_distinct)] = []
    # Where calls go, in the order they are tried (none: the model's own provider, under its id's name).
    deployments: Annotated[list[Deployment], Field(max_length=16), AfterValidator(_distinct)] = []
    active: Annotated[bool, Field(strict=True)] = True

    @model_validator(mode="after")
    def _consistent(self):
        if self.id.split("/", 1)[0] != self.provider:
            raise ValueError("the id must start with the provider, as in openai/gpt-4o")
        if self.max_output_tokens > self.context_window:
            raise ValueError("max_output_tokens must not exceed context_window")
        if ("images" in self.features) != ("image" in self.input_modalities):
            raise ValueError("features, input_modalities: the images feature and the image input modality go together")
        cache_prices = (self.cache_read_price_per_mtok, self.cache_write_price_per_mtok,
                        self.cache_write_1h_price_per_mtok)
        if "caching" in self.features and self.cache_read_price_per_mtok is None:
            raise ValueError("cache_read_price_per_mtok: a model with the caching feature needs its cache read price")
        if "caching" not in self.features and any(price is not None for price in cache_prices):
            raise ValueError("features: a model with cache prices has the caching feature")
        if self.bare_name in self.aliases:
            raise ValueError(f"aliases: \"{self.bare_name}\" is already the model's own name")
        return self

    @property
    def bare_name(self):
        """The id without its provider, as clients write it: gpt-4o for openai/gpt-4o."""
        return self.id.split("/", 1)[1]


class PricesSource(BaseModel):
    """Where the file's prices were read: a public price list, at a commit, on a day."""
    model_config = ConfigDict(extra="forbid")

    repository: Annotated[str, Field(max_length=200)]
    path: Annotated[str, Field(max_length=500)]
    commit: Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]
    commit_date: date | None = None
    read_on: date
    note: Annotated[str, Field(max_length=2000)] = ""


# An alias list's models: catalog ids, each once, as many as a call's `models` list may name.
AliasListModels = Annotated[list[Annotated[str, Field(max_length=MODEL_ID_MAX_LENGTH, pattern=MODEL_ID_PATTERN)]],
                            Field(min_length=1, max_length=ALIAS_LIST_MAX_MODELS), AfterValidator(_distinct)]


class AliasList(BaseModel):
    """A name that stands for models tried in order, as a call's `models` list is."""
    model_config = ConfigDict(extra="forbid")

    alias: Alias
    models: AliasListModels


class CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prices_source: PricesSource | None = None
    models: Annotated[list[CatalogModel], Field(min_length=1)]
    # Each list's models may be the file's or ones already loaded (the schema checks them at commit).
    alias_lists: list[AliasList] = []

    @model_validator(mode="after")
    def _unique(self):
        ids = [model.id for model in self.models]
        if len(set(ids)) != len(ids):
            raise ValueError("a model id appears twice")
        return self

    @model_validator(mode="after")
    def _names_unique(self):
        """A name resolves to one model at most: an alias is no other model's
        bare name or alias (nor an id, which has a slash no alias has). The
        schema checks the same over the whole table, at commit."""
        owners = {model.bare_name: model.id for model in self.models}
        for index, model in enumerate(self.models):
            for alias in model.aliases:
                other = owners.get(alias)
                if other is not None and other != model.id:
                    raise ValueError(f"models.{index}.aliases: \"{alias}\" is already a name of {other}")
                owners[alias] = model.id
        for index, listed in enumerate(self.alias_lists):
            other = owners.get(listed.alias)
            if other is not None:
                raise ValueError(f"alias_lists.{index}.alias: \"{listed.alias}\" is already a name of {other}")
            owners[listed.alias] = f"alias list {index}"
        return self


def read_catalog(path):
    """The file's models and alias lists (`validated`), or CatalogError saying what is wrong where."""
    try:
        return validated(json.loads(Path(path).read_text(), parse_float=Decimal))
    except (OSError, ValueError) as exc:
        raise CatalogError(_describe(exc)) from None


def validated(document):
    """A catalog document (its parsed JSON), validated whole, as load_catalog takes it:
    {"models": [dict], "alias_lists": [dict]}; pydantic's ValidationError when it is refused."""
    return CatalogFile.model_validate(document).model_dump(include={"models", "alias_lists"})


def _describe(exc):
    if isinstance(exc, ValidationError):
        problems = [f"{'.'.join(str(part) for part in error['loc']) or 'file'}: {error['msg']}"
                    for error in exc.errors(include_url=False, include_input=False)]
        return "catalog refused: " + "; ".join(problems)
    return f"catalog refused: {exc}"


# The models table's columns, by the names a validated entry gives them.
CATALOG_COLUMNS = ["id", "provider", "name", "description", "context_window", "max_output_tokens",
                   "input_price_per_mtok", "output_price_per_mtok", "cache_read_price_per_mtok",
                   "cache_write_price_per_mtok", "cache_write_1h_price_per_mtok", "prices_as_of", "capabilities",
                   "features", "input_modalities", "aliases", "deployments", "active"]
# The same columns as the table names them.
TABLE_COLUMNS = [{"active": "is_active"}.get(column, column) for column in CATALOG_COLUMNS]


# Inserts a model, or updates it when any column differs (an unchanged row is left as it is).
UPSERT_MODEL = f"""
    INSERT INTO models ({", ".join(TABLE_COLUMNS)})
    VALUES ({", ".join(f"%({column})s" for column in CATALOG_COLUMNS)})
    ON CONFLICT (id) DO UPDATE
       SET {", ".join(f"{column} = EXCLUDED.{column}" for column in TABLE_COLUMNS[1:])}
     WHERE ({", ".join(f"models.{column}" for column in TABLE_COLUMNS[1:])})
           IS DISTINCT FROM
           ({", ".join(f"EXCLUDED.{column}" for column in TABLE_COLUMNS[1:])})
    RETURNING (xmax = 0) AS inserted
"""


UPSERT_ALIAS_LIST = """
    INSERT INTO alias_lists (alias, models) VALUES (%(alias)s, %(models)s)
    ON CONFLICT (alias) DO UPDATE SET models = EXCLUDED.models, updated_at = now()
     WHERE alias_lists.models IS DISTINCT FROM EXCLUDED.models
"""


def load_catalog(cur, catalog):
    """Upserts a validated catalog (read_catalog): its models, then its alias
    lists, in the caller's transaction; returns (inserted, updated) models.
    A name that clashes with a name already stored, or a list naming no
    model, fails the caller's commit (the schema's models_names_unique,
    alias_lists_valid), so nothing is loaded."""
    inserted = updated = 0
    for listed in catalog["alias_lists"]:
        cur.execute(UPSERT_ALIAS_LIST, listed)
    for model in catalog["models"]:
        cur.execute(UPSERT_MODEL, {**{column: model[column] for column in CATALOG_COLUMNS},
                                   "deployments": Json(model["deployments"])})
        row = cur.fetchone()
        if row is not None:
            inserted += row[0]
            updated += not row[0]
    return inserted, updated
