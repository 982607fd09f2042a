"""Operations endpoints, outside /api/v1: liveness and readiness."""
from flask import Blueprint

from app.errors import DatabaseUnavailable
from app.extensions import db

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    try:
        db.ping()
    except DatabaseUnavailable:
        return {"status": "unavailable", "database": "unreachable"}, 503
    return {"status": "ok", "database": "ok"}
