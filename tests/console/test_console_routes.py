"""The console's routes: / sends the browser there, every page URL answers the
single page (index.html), its assets are files, and every answer carries the
console's Content-Security-Policy. The rest of the service is unchanged."""
import re

import httpx
import pytest

import app.console as console
from app import close_app, create_app
from tests.support import assert_error, bearer, user

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
INDEX = (console.STATIC / "index.html").read_bytes()
PAGES = ["/console", "/console/", "/console/overview", "/console/models/openai/gpt-4o-mini",
         "/console/models?q=cheap&sort=price", "/console/chat/0b7c6a1e-5f7e-4a52-9d7e-6d1c1c1c1c1c/"]


@pytest.fixture
def assets(tmp_path, monkeypatch):
    """A stand-in for static/assets/, which the pages' own files fill."""
    (tmp_path / "app.js").write_text("export const ready = true;\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "chart.js").write_text("export default {};\n")
    (tmp_path / "console.css").write_text("body { margin: 0; }\n")
    monkeypatch.setattr(console, "ASSETS", tmp_path)
    return tmp_path


def fetched(client, path, **kwargs):
    """The answer read whole and closed, as a server closes it: a file's answer holds the file open until then."""
    with client.get(path, **kwargs) as response:
        response.get_data()
    return response


def assert_console_headers(response):
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_the_root_redirects_to_the_console(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/console/"
    assert_console_headers(response)


@pytest.mark.parametrize("path", PAGES)
def test_every_page_url_answers_the_single_page(client, path):
    response = fetched(client, path)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert response.get_data() == INDEX
    assert "no-cache" in response.headers["Cache-Control"]
    assert_console_headers(response)


def test_the_page_loads_its_script_and_style_from_the_console_only():
    page = INDEX.decode()
    assert re.search(r'<script type="module" src="/console/assets/app\.js"></script>', page)
    assert '<link rel="stylesheet" href="/console/assets/console.css">' in page
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "no inline script: the policy would refuse it"
    assert "style=" not in page and "<style" not in page


@pytest.mark.parametrize("name, mimetype", [("app.js", "text/javascript"), ("lib/chart.js", "text/javascript"),
                                            ("console.css", "text/css")])
def test_assets_are_served_and_revalidated(client, assets, name, mimetype):
    response = fetched(client, f"/console/assets/{name}")
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert response.get_data() == (assets / name).read_bytes()
    assert "no-cache" in response.headers["Cache-Control"]
    assert_console_headers(response)
    unchanged = fetched(client, f"/console/assets/{name}", headers={"If-None-Match": response.headers["ETag"]})
    assert unchanged.status_code == 304


@pytest.mark.parametrize("path", ["/console/assets/missing.js", "/console/assets", "/console/assets/",
                                  "/console/assets/../index.html", "/console/assets/%2e%2e/index.html",
                                  "/console/assets/lib/../../../__init__.py"])
def test_a_missing_asset_is_a_json_404(client, assets, path):
    response = client.get(path)
    assert_error(response, 404, "not_found")
    assert_console_headers(response)


@pytest.mark.parametrize("path", ["/nope", "/consoles", "/console-x", "/api/v1/nope", "/api/v1/console/",
                                  "/static/index.html"])
def test_every_other_unknown_route_stays_a_json_404(client, path):
    response = client.get(path)
    assert_error(response, 404, "not_found")
    assert response.headers["Content-Security-Policy"] != CSP


def test_a_page_is_only_read(client):
    assert_error(client.post("/console/", json={}), 405, "method_not_allowed")


def test_the_console_is_not_in_the_api_document(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith("/console")]


def test_the_api_still_refuses_unknown_query_parameters(client):
    token = user(client)
    assert_error(client.get("/api/v1/balance", query_string={"q": "x"}, headers=bearer(token)), 400,
                 "validation_error")


def test_the_console_is_not_rate_limited(settings):
    app = create_app({**settings, "RATELIMIT_ENABLED": True, "RATE_LIMIT_AUTH": "2 per minute"})
    try:
        client = app.test_client()
        for _ in range(30):
            response = fetched(client, "/console/overview")
            assert response.status_code == 200
            assert not [header for header in response.headers.keys() if header.lower().startswith("x-ratelimit")]
        assert client.get("/").status_code == 302
    finally:
        close_app(app)


def test_the_served_app_answers_the_console(live_server):
    page = httpx.get(f"{live_server.url}/console/keys")
    assert page.status_code == 200 and page.content == INDEX
    assert page.headers["content-security-policy"] == CSP
    root = httpx.get(f"{live_server.url}/")
    assert (root.status_code, root.headers["location"]) == (302, "/console/")
