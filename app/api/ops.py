"""Operations endpoints, outside /api/v1: liveness, readiness and the API's
description (/openapi.json, and /docs to read it, served with no network)."""
import base64
import hashlib
import re

from flask import request
from swagger_ui import api_doc
from swagger_ui.core import ApplicationDocument

from app import metrics
from app.api.contract import response, without_database
from app.api.openapi import HEALTH, document
from app.api.pipeline import OperationBlueprint
from app.extensions import db

bp = OperationBlueprint("ops", __name__)


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


@bp.get("/metrics")
def metrics_page():
    """Prometheus' text format, every worker's figures (app/metrics.py); guarded by METRICS_TOKEN."""
    return metrics.scrape()


@bp.get("/docs/openapi.json")
def docs_openapi():
    """The same document, where the /docs page looks for it."""
    return document()


# swagger-ui-py's page: its assets, served from the package, and one inline
# script that starts Swagger UI. The page fetches nothing from another site, so
# no validator badge (an image from validator.swagger.io), and shows this one
# document: the base layout, without the top bar whose box loads another
# document by URL (and whose logo is an SVG with an inline style).
DOCS = {"config_rel_url": "/openapi.json", "url_prefix": "/docs", "title": "Q Marketplace API",
        "parameters": {"validatorUrl": "null", "layout": '"BaseLayout"'}}
DOCS_PAGE = ApplicationDocument(None, **DOCS)
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def register_docs(app):
    api_doc(app, **DOCS)


def _docs_policy(page):
    """The page's Content-Security-Policy: its own files, and of inline scripts
    only the page's own, by their hash (the page is the same at every request)."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
                      for script in INLINE_SCRIPT.findall(page))
    return (f"default-src 'none'; script-src 'self' {hashes}; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


DOCS_POLICY = _docs_policy(DOCS_PAGE.doc_html)


@bp.after_app_request
def docs_headers(answer):
    """/docs is HTML with an inline script: a policy of its own (JSON answers keep theirs)."""
    if request.blueprint == DOCS_PAGE.blueprint_name and answer.mimetype == "text/html":
        answer.headers["Content-Security-Policy"] = DOCS_POLICY
    return answer
