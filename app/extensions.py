"""The process's shared services, each made once and imported by name. Those
built from the settings (tokens, vault, providers, breakers, health) are made by create_app and
kept in app.extensions; the names here find the current app's."""
from flask import current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from werkzeug.local import LocalProxy

from database import DatabaseService

# database/ knows no Flask: it is told how to find the pool state of the app in use.
db = DatabaseService(lambda: current_app.extensions["database"])
# Storage, switches and headers come from the app's RATELIMIT_* settings. While
# the storage (Redis) cannot be reached, each worker counts on its own in memory,
# and goes back to it once it answers: the limits fail open to per-worker counts,
# never to a 500 (README, "Protection").
limiter = Limiter(key_func=get_remote_address, in_memory_fallback_enabled=True, swallow_errors=True)
tokens = LocalProxy(lambda: current_app.extensions["tokens"])
vault = LocalProxy(lambda: current_app.extensions["vault"])
providers = LocalProxy(lambda: current_app.extensions["providers"])
breakers = LocalProxy(lambda: current_app.extensions["breakers"])
health = LocalProxy(lambda: current_app.extensions["health"])
