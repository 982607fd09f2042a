"""The catalog, ratings and recommendations: endpoints 17–20."""
from flask import Blueprint, g

from app import marketplace
from app.auth import require_auth
from app.errors import NotFound
from app.extensions import db
from app.openapi import documented, query_enum
from app.requests import json_body, query_choice
from app.schemas import (CAPABILITIES, PROVIDERS, DailyUsage, ModelDetail, ModelList, Rating, RatingRequest,
                         Recommendation, RecommendationList, RecommendRequest)

bp = Blueprint("models", __name__, url_prefix="/models")

SORTS = {
    "popularity": lambda row: (row["popularity_rank"], row["id"]),
    "price": lambda row: (marketplace.blended_price(row), row["id"]),
    "rating": lambda row: (-marketplace.bayesian_average(row["rating_count"], row["rating_average"]), row["id"]),
    "id": lambda row: row["id"],
}
USAGE_DAYS = 30


@bp.get("")
@documented("The catalog, with prices, ratings and usage", {200: ModelList}, auth=False, query=[
    query_enum("provider", PROVIDERS, "Only this provider's models."),
    query_enum("capability", CAPABILITIES, "Only models with this capability."),
    query_enum("sort", tuple(SORTS), "Order: popularity (most used first), price (mean of input and output "
                                     "price, cheapest first), rating (Bayesian average, best first) or id.")])
def list_models():
    """Public: the active catalog, filtered and sorted."""
    provider = query_choice("provider", PROVIDERS)
    capability = query_choice("capability", CAPABILITIES)
    sort = query_choice("sort", tuple(SORTS)) or "id"
    rows = [row for row in db.catalog()
            if (provider is None or row["provider"] == provider)
            and (capability is None or capability in row["capabilities"])]
    rows.sort(key=SORTS[sort])
    return ModelList(models=[marketplace.catalog_entry(row) for row in rows]).model_dump(mode="json")


@bp.get("/<provider>/<name>")
@documented("One model, its ratings and its usage by day", {200: ModelDetail}, auth=False)
def show_model(provider, name):
    """Public: one model, its rating summary and usage by day."""
    rows = db.catalog(f"{provider}/{name}")
    if not rows:
        raise NotFound()
    model_id = rows[0]["id"]
    usage = [DailyUsage.model_validate(day) for day in db.model_usage_by_day(model_id, USAGE_DAYS)]
    entry = marketplace.catalog_entry(rows[0])
    return ModelDetail(**entry.model_dump(), usage_by_day=usage).model_dump(mode="json")


@bp.put("/<provider>/<name>/rating")
@documented("Rate a model (a second call replaces your rating)", {200: Rating, 201: Rating}, request=RatingRequest)
@require_auth
def rate_model(provider, name):
    body = json_body(RatingRequest)
    row = db.rate_model(g.user_id, f"{provider}/{name}", body.rating, body.review)
    if row is None:
        raise NotFound()
    return Rating.model_validate(row).model_dump(mode="json"), 201 if row["created"] else 200


@bp.post("/recommend")
@documented("Which models suit a task, ranked, with reasons", {200: RecommendationList}, request=RecommendRequest)
@require_auth
def recommend():
    body = json_body(RecommendRequest)
    preferences = db.preferences(g.user_id)
    ranked, notice = marketplace.recommend(
        db.catalog(), body.task, body.capabilities, body.max_price_per_mtok,
        held_providers=db.provider_key_holdings(g.user_id),
        preferred_providers=preferences["preferred_providers"] if preferences else [],
        limit=body.limit,
    )
    return RecommendationList(
        recommendations=[Recommendation(model=marketplace.catalog_entry(row), score=score, reasons=reasons)
                         for row, score, reasons in ranked],
        notice=notice,
    ).model_dump(mode="json")
