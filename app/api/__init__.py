"""HTTP only: one blueprint per area under /api/v1, the operations endpoints and
the inference API at the root, and what every view shares: its declarations
(contract), the pipeline that serves them, who is calling (callers), bodies,
idempotency, the wire formats, pagination and the OpenAPI document."""
from flask_limiter import RateLimitExceeded

from app.api import (access_keys, account, admin_alias_lists, admin_catalog, admin_ops, admin_users, auth, balance,
                     chat, inference, keys, models, ops, service, usage, webhooks)
from app.api.guards import over_rate_limit, refuse_unknown_query_parameters

API_PREFIX = "/api/v1"
API_BLUEPRINTS = (auth, keys, access_keys, balance, usage, chat, models, account, service, webhooks, admin_users,
                  admin_catalog, admin_alias_lists, admin_ops)


def register_blueprints(app):
    app.register_blueprint(ops.bp)
    ops.register_docs(app)
    for module in API_BLUEPRINTS:
        app.register_blueprint(module.bp, url_prefix=API_PREFIX + module.bp.url_prefix)
    # The inference API, at the root where the providers' SDKs look for it.
    inference.register(app)
    app.before_request(refuse_unknown_query_parameters)
    app.register_error_handler(RateLimitExceeded, over_rate_limit)
