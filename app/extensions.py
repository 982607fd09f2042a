"""The process's shared services, made once and bound to the app in create_app."""
from flask import current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from database import DatabaseService

# database/ knows no Flask: it is told how to find the pool state of the app in use.
db = DatabaseService(lambda: current_app.extensions["database"])
# Storage, switches and headers come from the app's RATELIMIT_* settings.
limiter = Limiter(key_func=get_remote_address)
