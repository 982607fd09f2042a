"""Operations endpoints, outside /api/v1: liveness, readiness and the API's
description (/openapi.json, and /docs to read it, served with no network)."""
from flask import Blueprint
from swagger_ui import api_doc

from app.extensions import db
from app.openapi import HEALTH, document, documented

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@documented("The process is alive", {200: HEALTH}, auth=False, uses_database=False)
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
@documented("The database is reachable (503 database_unavailable when not)", {200: HEALTH}, auth=False)
def readyz():
    db.ping()
    return {"status": "ok", "database": "ok"}


@bp.get("/openapi.json")
@documented("This document", {200: {"type": "object"}}, auth=False, uses_database=False)
def openapi():
    return document()


@bp.get("/docs/openapi.json")
def docs_openapi():
    """The same document, where the /docs page looks for it."""
    return document()


def register_docs(app):
    api_doc(app, config_rel_url="/openapi.json", url_prefix="/docs", title="Q Marketplace API")
