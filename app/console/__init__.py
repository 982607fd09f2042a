"""The web console: a single-page app under /console/, served as files.

Every page URL answers index.html, so that deep links and reloads work; the
script then draws the page. Its assets live in static/assets/. These routes
are no part of the API: they declare no contract, so /openapi.json leaves them
out and the unknown-query guard lets a page's own ?q= through, and no rate
limit counts them."""
from pathlib import Path

from flask import Blueprint, redirect, send_from_directory
from werkzeug.exceptions import NotFound

from app.extensions import limiter

STATIC = Path(__file__).parent / "static"
ASSETS = STATIC / "assets"
CONSOLE_PATH = "/console/"
# The page loads only its own files: no inline script or style, no other origin.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
                           "frame-ancestors 'none'")

bp = Blueprint("console", __name__)
limiter.exempt(bp)


@bp.get("/")
def home():
    return redirect(CONSOLE_PATH, 302)


@bp.get("/console/assets/<path:asset>")
def assets(asset):
    return _revalidated(send_from_directory(ASSETS, asset))


@bp.get("/console/", defaults={"page": ""}, strict_slashes=False)  # /console too, without a redirect
@bp.get("/console/<path:page>")
def page(page):
    if page.partition("/")[0] == "assets":  # /console/assets, /console/assets/: no asset named
        raise NotFound()
    return _revalidated(send_from_directory(STATIC, "index.html", mimetype="text/html"))


def _revalidated(answer):
    """File names carry no version, so a cache asks again each time (a 304 when unchanged)."""
    answer.cache_control.no_cache = True
    answer.cache_control.public = True
    return answer


@bp.after_request
def console_headers(answer):
    answer.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    answer.headers["X-Content-Type-Options"] = "nosniff"
    answer.headers["Referrer-Policy"] = "no-referrer"
    return answer
