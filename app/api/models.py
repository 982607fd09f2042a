"""The catalog, ratings and recommendations: endpoints 17–20."""
from flask import current_app

from app import routing
from app.access import user_access
from app.api.bodies import query_choice
from app.api.contract import ACCOUNT, body, caller, query, response
from app.api.openapi import query_enum
from app.api.pipeline import OperationBlueprint
from app.errors import NotFound
from app.extensions import breakers, db, health
from app.recommend import bayesian_average, blended_price, catalog_entry, rank
from app.schemas import (DailyUsage, ModelAccess, ModelAccessList, ModelDetail, ModelList, Rating, RatingRequest,
                         Recommendation, RecommendationList, RecommendRequest)
from app.schemas.catalog import DeploymentHealth, PriceHistory, PriceVersion
from database.vocab import CAPABILITIES, PROVIDERS

bp = OperationBlueprint("models", __name__, url_prefix="/models")

SORTS = {
    "popularity": lambda row: (row["popularity_rank"], row["id"]),
    "price": lambda row: (blended_price(row), row["id"]),
    "rating": lambda row: (-bayesian_average(row["rating_count"], row["rating_average"]), row["id"]),
    "id": lambda row: row["id"],
}
USAGE_DAYS = 30


@bp.get("")
@response(ModelList)
@query(query_enum("provider", PROVIDERS, "Only this provider's models."),
       query_enum("capability", CAPABILITIES, "Only models with this capability."),
       query_enum("sort", tuple(SORTS), "Order: popularity (most used first), price (mean of input and output "
                                        "price, cheapest first), rating (Bayesian average, best first) or id."))
def list_models():
    """The catalog, with prices, ratings and usage

    Public: the active catalog, filtered and sorted."""
    provider = query_choice("provider", tuple(current_app.config["PROVIDERS"]))
    capability = query_choice("capability", CAPABILITIES)
    sort = query_choice("sort", tuple(SORTS)) or "id"
    rows = [row for row in db.catalog()
            if (provider is None or row["provider"] == provider)
            and (capability is None or capability in row["capabilities"])]
    rows.sort(key=SORTS[sort])
    return ModelList(models=[catalog_entry(row) for row in rows])


@bp.get("/access")
@response(ModelAccessList)
@caller(ACCOUNT)
def list_access(caller):
    """Which models you can call now, and with whose key"""
    access = user_access(caller.user_id, db.catalog())
    return ModelAccessList(access=[ModelAccess.of(model_id, each) for model_id, each in access.items()])


@bp.get("/<provider>/<name>")
@response(ModelDetail)
def show_model(provider, name):
    """One model, its ratings and its usage by day

    Public."""
    rows = db.catalog(f"{provider}/{name}")
    if not rows:
        raise NotFound()
    model_id = rows[0]["id"]
    usage = [DailyUsage.model_validate(day) for day in db.model_usage_by_day(model_id, USAGE_DAYS)]
    entry = catalog_entry(rows[0])
    served = routing.catalog_deployments(rows[0])
    keys = [(served_by, upstream, routing.deployment_key(served_by, upstream)) for served_by, upstream in served]
    return ModelDetail(**entry.model_dump(), usage_by_day=usage, deployments=[
        DeploymentHealth(provider=served_by, model=upstream, health=health.figures(key),
                         circuit="open" if breakers.is_open(key) else "closed")
        for served_by, upstream, key in keys])


@bp.get("/<provider>/<name>/prices")
@response(PriceHistory)
def price_history(provider, name):
    """A model's price book: every version, newest first, scheduled ones too

    Public."""
    versions = db.price_history(f"{provider}/{name}")
    if versions is None:
        raise NotFound()
    return PriceHistory(prices=[PriceVersion.from_row(row) for row in versions])


@bp.put("/<provider>/<name>/rating")
@response(Rating, 201)  # a first rating
@response(Rating, 200)  # one replaced
@caller(ACCOUNT)
@body(RatingRequest)
def rate_model(caller, rating, provider, name):
    """Rate a model (a second call replaces your rating)"""
    row = db.rate_model(caller.user_id, f"{provider}/{name}", rating.rating, rating.review)
    if row is None:
        raise NotFound()
    return Rating.model_validate(row), 201 if row["created"] else 200


@bp.post("/recommend")
@response(RecommendationList)
@caller(ACCOUNT)
@body(RecommendRequest)
def recommend(caller, wanted):
    """Which models suit a task, ranked, with reasons"""
    preferences = db.preferences(caller.user_id)
    rows = db.catalog()
    access = user_access(caller.user_id, rows)
    ranked, notice = rank(
        rows, wanted.task, wanted.capabilities, wanted.max_price_per_mtok, access,
        preferred_providers=preferences["preferred_providers"] if preferences else [],
        limit=wanted.limit, callable_first=wanted.callable_first,
    )
    return RecommendationList(
        recommendations=[Recommendation(model=catalog_entry(row), score=score, reasons=reasons,
                                        access=ModelAccess.of(row["id"], access[row["id"]]))
                         for row, score, reasons in ranked],
        notice=notice,
    )
