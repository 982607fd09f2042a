"""Whether a user can call a model now, and with whose key: one of their own
(BYOK), the service's house key, none at all (a local model, or a provider
configured to need none), or not yet: a key of their own is needed first.

A model is callable when any of its deployments is: the same rule
app/routing.py applies when a call is made."""
from dataclasses import dataclass

from flask import current_app

from app import routing
from app.extensions import db

OWN_KEY, HOUSE_KEY, LOCAL, NEEDS_KEY = "own_key", "house_key", "local", "needs_key"


@dataclass(frozen=True)
class Access:
    via: str              # OWN_KEY, HOUSE_KEY, LOCAL or NEEDS_KEY
    providers: tuple      # the providers of the model's deployments, in the order calls try them

    @property
    def callable(self):
        return self.via != NEEDS_KEY


def model_access(row, own_providers, configured):
    """The Access of a catalog row (db.catalog) for a user holding keys for
    `own_providers`, given the configured providers (config["PROVIDERS"])."""
    served = [provider for provider, _ in routing.catalog_deployments(row)]
    usable = [configured[provider] for provider in served if provider in configured]
    if any(not provider.remote for provider in usable):
        via = LOCAL
    elif any(provider.name in own_providers for provider in usable):
        via = OWN_KEY
    elif any(provider.keys or not provider.needs_key for provider in usable):
        via = HOUSE_KEY
    else:
        via = NEEDS_KEY
    return Access(via, tuple(dict.fromkeys(served)))


def user_access(user_id, rows):
    """{model id: Access} of catalog rows (db.catalog) for the user, from the providers they hold keys for."""
    own, configured = db.provider_key_holdings(user_id), current_app.config["PROVIDERS"]
    return {row["id"]: model_access(row, own, configured) for row in rows}
