"""The catalog, ratings and recommendations."""
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import Field

from app.money import format_money
from app.schemas.fields import Capability, MoneyText, NonNegativeAmount, Request, Response, Text
from database.vocab import CAPABILITIES, FEATURES, INPUT_MODALITIES

Feature = Literal[FEATURES]
InputModality = Literal[INPUT_MODALITIES]


class RatingSummary(Response):
    count: int
    average: str | None
    bayesian_average: str
    distribution: dict[str, int]


class ModelUsage(Response):
    request_count: int
    prompt_tokens: int
    completion_tokens: int
    popularity_rank: int


PRICE_COLUMNS = ("input_price_per_mtok", "output_price_per_mtok", "cache_read_price_per_mtok",
                 "cache_write_price_per_mtok", "cache_write_1h_price_per_mtok")


def prices_of(row):
    """A catalog row's prices as the API shows them: decimal strings, null
    for a cache price the model does not have."""
    return {column: None if row[column] is None else format_money(row[column]) for column in PRICE_COLUMNS}


class ModelPrices(Response):
    """Per million tokens: input, output, and a prompt cache's reads and writes
    (5-minute and 1-hour), null when the model has no such price."""
    input_price_per_mtok: MoneyText
    output_price_per_mtok: MoneyText
    cache_read_price_per_mtok: MoneyText | None
    cache_write_price_per_mtok: MoneyText | None
    cache_write_1h_price_per_mtok: MoneyText | None


class CatalogEntry(ModelPrices):
    id: str
    provider: str
    name: str
    description: str
    context_window: int
    max_output_tokens: int
    prices_as_of: date
    capabilities: list[str]
    features: list[Feature]                # what a call may ask of it beyond text
    input_modalities: list[InputModality]  # what its prompt may hold
    aliases: list[str]                     # other names the inference API knows it by
    rating: RatingSummary
    usage: ModelUsage


class DailyUsage(Response):
    day: date
    request_count: int
    prompt_tokens: int
    completion_tokens: int


class HealthFigures(Response):
    attempts: int
    errors: int
    first_token_p50_ms: float | None  # None: nothing measured in the window
    first_token_p95_ms: float | None
    output_tokens_per_second: float | None


class DeploymentHealth(Response):
    """Where the model is served, and how that has gone, as the worker that answered measured it."""
    provider: str
    model: str
    circuit: Literal["closed", "open"]
    health: dict[Literal["5m", "1h"], HealthFigures]


class ModelDetail(CatalogEntry):
    usage_by_day: list[DailyUsage]
    deployments: list[DeploymentHealth]


class ModelList(Response):
    models: list[CatalogEntry]
    next_cursor: str | None = None


class RatingRequest(Request):
    rating: Annotated[int, Field(ge=1, le=5)]
    review: Annotated[Text, Field(max_length=2000)] | None = None


class Rating(Response):
    model_id: str
    rating: int
    review: str | None
    created_at: datetime
    updated_at: datetime


class ModelAccess(Response):
    """Whether you can call a model now: `via` your own key, the service's
    house key, no key (local), or not yet (`needs_key`: add a key for one of
    `providers` on /api/v1/keys)."""
    model_id: str
    callable: bool
    via: Literal["own_key", "house_key", "local", "needs_key"]
    providers: list[str]  # the providers of its deployments, in the order calls try them

    @classmethod
    def of(cls, model_id, access):
        return cls(model_id=model_id, callable=access.callable, via=access.via, providers=list(access.providers))


class ModelAccessList(Response):
    access: list[ModelAccess]


class RecommendRequest(Request):
    task: Annotated[Text, Field(min_length=1, max_length=2000)]
    max_price_per_mtok: NonNegativeAmount | None = None
    capabilities: Annotated[list[Capability], Field(max_length=len(CAPABILITIES))] = []
    limit: Annotated[int, Field(ge=1, le=50)] = 5
    # Models you can call now come before those needing a key you have not added (false: on fit alone).
    callable_first: Annotated[bool, Field(strict=True)] = True


class Recommendation(Response):
    model: CatalogEntry
    score: float
    reasons: list[str]
    access: ModelAccess


class RecommendationList(Response):
    recommendations: list[Recommendation]
    notice: str | None = None
    next_cursor: str | None = None
