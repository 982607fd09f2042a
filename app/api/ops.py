"""Operations endpoints, outside /api/v1: liveness, readiness and the API's
description (/openapi.json, and /docs to read it, served with no network)."""
from flask import Blueprint
from swagger_ui import api_doc

from app.api.contract import response, without_database
from app.api.openapi import HEALTH, document
from app.extensions import db

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@response(HEALTH)
@without_database
def healthz():
    """The process is alive"""
    return {"status": "ok"}


@bp.get("/readyz")
@response(HEALTH)
def readyz():
    """The database is reachable (503 database_unavailable when not)"""
    db.ping()
    return {"status": "ok", "database": "ok"}


@bp.get("/openapi.json")
@response({"type": "object"})
@without_database
def openapi():
    """This document"""
    return document()


@bp.get("/docs/openapi.json")
def docs_openapi():
    """The same document, where the /docs page looks for it."""
    return document()


def register_docs(app):
    api_doc(app, config_rel_url="/openapi.json", url_prefix="/docs", title="Q Marketplace API")
