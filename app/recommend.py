"""The marketplace's judgement: rating summaries and which model suits a task.

Everything here is deterministic: the same catalog, ratings, usage and request
always give the same ranking, and every weight lives in this file."""
import math
import re
from decimal import Decimal

from app.money import format_money
from app.schemas import CatalogEntry, ModelUsage, RatingSummary
from app.schemas.catalog import prices_of
from app.access import HOUSE_KEY, LOCAL, NEEDS_KEY, OWN_KEY

# Bayesian average: each model starts with PRIOR_VOTES imaginary ratings of
# PRIOR_MEAN, so three 5-star votes do not outrank three hundred 4.8s.
PRIOR_MEAN = Decimal("3.5")
PRIOR_VOTES = 5

# How much each signal counts in a recommendation's score (they add up to 1).
WEIGHTS = {
    "capability": Decimal("0.40"),   # the model has what the task needs
    "price": Decimal("0.20"),        # cheaper, and within the budget
    "rating": Decimal("0.15"),       # Bayesian-average rating
    "popularity": Decimal("0.10"),   # how much it is used here
    "available": Decimal("0.10"),    # callable: local, the user's own key, or a house key
    "preferred": Decimal("0.05"),    # from a provider the user prefers
}

# Words in a task that say which capability it needs.
TASK_WORDS = {
    "coding": r"code|coding|program|python|javascript|typescript|java|rust|golang|sql|function|bug|debug|refactor"
              r"|compile|script|api|regex|unit test",
    "reasoning": r"math|maths|prove|proof|logic|reason|calculate|equation|puzzle|theorem|algebra|physics|analy[sz]e",
    "long-context": r"long|document|pdf|book|contract|report|transcript|codebase|pages|summari[sz]e",
    "vision": r"image|photo|picture|screenshot|diagram|chart|scan|visual|ocr",
    "writing": r"write|writing|essay|blog|story|email|letter|poem|article|copy|draft|edit|rewrite",
    "translation": r"translat\w*|french|spanish|german|italian|japanese|chinese|portuguese|language",
    "fast": r"fast|quick|realtime|real-time|latency|instant|chat ?bot",
    "cheap": r"cheap|budget|low[- ]cost|inexpensive|high[- ]volume|bulk|many requests",
}
TASK_PATTERNS = {capability: re.compile(rf"\b(?:{words})\b", re.I) for capability, words in TASK_WORDS.items()}
CALLABLE_FIRST_NOTICE = ("Models you can call now come first; a better fit that needs a key you have not added "
                         "comes after them (send callable_first: false to rank on fit alone).")
PROVIDER_NAMES = {"openai": "OpenAI", "anthropic": "Anthropic", "local": "local"}


def blended_price(row):
    """The price a budget is compared with: the mean of input and output price per million tokens."""
    return (row["input_price_per_mtok"] + row["output_price_per_mtok"]) / 2


def bayesian_average(count, average):
    total = PRIOR_MEAN * PRIOR_VOTES + (average or 0) * count
    return total / (PRIOR_VOTES + count)


def catalog_entry(row):
    """A catalog row (DatabaseService.catalog) as the API shows it."""
    count, average = row["rating_count"], row["rating_average"]
    return CatalogEntry(
        **{key: row[key] for key in ("id", "provider", "name", "description", "context_window",
                                     "max_output_tokens", "prices_as_of", "capabilities", "features",
                                     "input_modalities", "aliases")},
        **prices_of(row),
        rating=RatingSummary(
            count=count,
            average=None if average is None else str(round(average, 2)),
            bayesian_average=str(round(bayesian_average(count, average), 2)),
            distribution=row["distribution"] or {str(stars): 0 for stars in range(1, 6)},
        ),
        usage=ModelUsage(**{key: row[key] for key in ("request_count", "prompt_tokens", "completion_tokens",
                                                      "popularity_rank")}),
    )


def needed_capabilities(task, asked):
    """What the task needs: the capabilities asked for plus those its words suggest."""
    inferred = [capability for capability, pattern in TASK_PATTERNS.items() if pattern.search(task)]
    return list(dict.fromkeys([*asked, *inferred]))


def rank(rows, task, asked_capabilities, budget, access, preferred_providers, limit, callable_first=True):
    """(ranked [(row, score, reasons)], notice). `access`: {model id: Access}
    (app/access.py). Models over the budget are left out; when that leaves
    none, the cheapest are shown with a notice saying so. With
    `callable_first`, models the user can call now come first, whatever their
    score; a notice says so when that put a better-scored model lower."""
    if not rows:
        return [], "The catalog has no active model right now."
    needs = needed_capabilities(task, asked_capabilities)
    affordable = [row for row in rows if budget is None or blended_price(row) <= budget]
    notice = None
    if not affordable:
        notice = (f"No model costs at most {format_money(budget)} USD per million tokens; "
                  "these are the cheapest instead.")
        affordable = rows
    context = {
        "needs": needs,
        "budget": budget,
        "access": access,
        "preferred": set(preferred_providers),
        "cheapest": min(blended_price(row) for row in rows),
        "priciest": max(blended_price(row) for row in rows),
        "most_used": max(row["request_count"] for row in rows),
    }
    scored = [(row, *_score(row, context)) for row in affordable]
    scored.sort(key=lambda item: (-item[1], blended_price(item[0]), item[0]["id"]))
    if callable_first:
        by_fit = scored[:limit]
        scored.sort(key=lambda item: not access[item[0]["id"]].callable)  # stable: the score orders each part
        if scored[:limit] != by_fit:
            notice = " ".join(filter(None, [notice, CALLABLE_FIRST_NOTICE]))
    return [(row, float(round(score, 4)), reasons) for row, score, reasons in scored[:limit]], notice


def _score(row, context):
    signals, reasons = {}, []
    needs = context["needs"]
    matched = [need for need in needs if need in row["capabilities"]]
    signals["capability"] = Decimal(len(matched)) / len(needs) if needs else Decimal(1)
    reasons += [f"matches {need}" for need in matched]

    price = blended_price(row)
    spread = _log_price(context["priciest"]) - _log_price(context["cheapest"])
    signals["price"] = Decimal(1) - ((_log_price(price) - _log_price(context["cheapest"])) / spread if spread else 0)
    if context["budget"] is not None and price <= context["budget"]:
        reasons.append(f"within your budget ({format_money(price)} ≤ {format_money(context['budget'])} USD/Mtok)")

    count, average = row["rating_count"], row["rating_average"]
    signals["rating"] = (bayesian_average(count, average) - 1) / 4
    if count:
        reasons.append(f"rated {round(average, 1)} by {count} user{'s' if count != 1 else ''}")

    most_used = context["most_used"]
    signals["popularity"] = (Decimal(math.log1p(row["request_count"])) / Decimal(math.log1p(most_used))
                             if most_used else Decimal(0))
    if row["request_count"] and row["popularity_rank"] <= 3:
        reasons.append(f"among the most used here (#{row['popularity_rank']})")

    provider = row["provider"]
    access = context["access"][row["id"]]
    signals["available"] = Decimal(access.callable)
    reasons.append(_access_reason(access))

    signals["preferred"] = Decimal(provider in context["preferred"])
    if provider in context["preferred"]:
        reasons.append(f"from {PROVIDER_NAMES[provider]}, a provider you prefer")
    return sum(WEIGHTS[name] * value for name, value in signals.items()), reasons


def _access_reason(access):
    names = " or ".join(PROVIDER_NAMES.get(provider, provider) for provider in access.providers)
    return {LOCAL: "runs locally with no key",
            OWN_KEY: f"you hold an {names} key",
            HOUSE_KEY: f"served with this service's {names} key",
            NEEDS_KEY: f"needs an {names} key you have not added"}[access.via]


def _log_price(price):
    return Decimal(math.log1p(price))
