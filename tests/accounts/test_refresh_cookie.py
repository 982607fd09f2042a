"""The refresh token's cookie, qm_refresh: set by login and refresh, read by a
refresh sent without a token, cleared by logout. Bearer clients see no change."""
import pytest

from app import close_app, create_app
from tests.support import PASSWORD, assert_error, bearer, login, register

AUTH = "/api/v1/auth"
COOKIE = "qm_refresh"
REFRESH_TTL = 30 * 86400  # the default REFRESH_TOKEN_TTL


def set_cookie(response):
    """The response's qm_refresh Set-Cookie: (value, {attribute: value}), names lower-case."""
    headers = [header for header in response.headers.getlist("Set-Cookie") if header.startswith(f"{COOKIE}=")]
    assert len(headers) == 1, response.headers
    first, *rest = headers[0].split("; ")
    attributes = {}
    for part in rest:
        name, _, value = part.partition("=")
        attributes[name.lower()] = value
    return first.partition("=")[2], attributes


def refresh(client, body=None, **kwargs):
    return client.post(f"{AUTH}/refresh", json={} if body is None else body, **kwargs)


@pytest.fixture
def ada(client):
    register(client)
    return login(client)


def test_login_sets_the_cookie_to_the_refresh_token(client):
    register(client)
    response = client.post(f"{AUTH}/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert response.status_code == 200
    value, attributes = set_cookie(response)
    assert value == response.get_json()["refresh_token"]
    assert attributes == {"httponly": "", "samesite": "Strict", "path": AUTH, "max-age": str(REFRESH_TTL),
                          "expires": attributes["expires"]}
    assert set(response.get_json()) == {"access_token", "refresh_token", "token_type", "expires_in", "user"}


def test_the_cookie_is_secure_over_https(client):
    register(client)
    response = client.post(f"{AUTH}/login", json={"email": "ada@example.com", "password": PASSWORD},
                           base_url="https://localhost")
    assert "secure" in set_cookie(response)[1]


def test_the_cookie_follows_the_refresh_token_ttl(settings):
    app = create_app({**settings, "REFRESH_TOKEN_TTL": 3600})
    try:
        client = app.test_client()
        register(client)
        response = client.post(f"{AUTH}/login", json={"email": "ada@example.com", "password": PASSWORD})
        assert set_cookie(response)[1]["max-age"] == "3600"
    finally:
        close_app(app)


def test_a_refresh_without_a_token_uses_the_cookie_and_rotates_it(client, ada):
    response = refresh(client)
    assert response.status_code == 200, response.get_json()
    pair = response.get_json()
    value, attributes = set_cookie(response)
    assert value == pair["refresh_token"] != ada["refresh_token"]
    assert (attributes["path"], attributes["samesite"], "httponly" in attributes) == (AUTH, "Strict", True)
    assert client.get(f"{AUTH}/me", headers=bearer(pair["access_token"])).status_code == 200
    # The cookie now holds the new token, which works once more; the old one is spent.
    assert refresh(client).status_code == 200
    assert_error(refresh(client, {"refresh_token": ada["refresh_token"]}), 401, "invalid_token")


def test_a_token_in_the_body_wins_over_the_cookie(client, database, ada):
    other_device = login(client)  # the cookie now holds this device's token
    response = refresh(client, {"refresh_token": ada["refresh_token"]})
    assert response.status_code == 200
    used = dict(database.query("SELECT replaced_by IS NOT NULL, count(*) FROM refresh_tokens GROUP BY 1"))
    assert used == {True: 1, False: 2}  # ada's spent; the other device's and the new one live
    assert refresh(client, {"refresh_token": other_device["refresh_token"]}).status_code == 200
    # A bad token in the body is refused even with a live cookie beside it.
    assert_error(refresh(client, {"refresh_token": "not-a-token"}), 401, "invalid_token")


def test_neither_a_token_nor_a_cookie_is_unauthorized(client):
    assert_error(refresh(client), 401, "unauthorized")


def test_logout_clears_the_cookie(client, ada):
    response = client.post(f"{AUTH}/logout", headers=bearer(ada["access_token"]))
    assert response.status_code == 204
    value, attributes = set_cookie(response)
    assert value == ""
    assert (attributes["max-age"], attributes["path"]) == ("0", AUTH)
    assert client.get_cookie(COOKIE, path=AUTH) is None
    assert_error(refresh(client), 401, "unauthorized")


def test_a_revoked_cookie_is_refused(client, app, ada):
    elsewhere = app.test_client()  # another browser of the same user signs out everywhere
    assert elsewhere.post(f"{AUTH}/logout", headers=bearer(login(elsewhere)["access_token"])).status_code == 204
    assert client.get_cookie(COOKIE, path=AUTH) is not None
    assert_error(refresh(client), 401, "invalid_token")


def test_a_spent_cookie_ends_every_session(client, ada):
    stolen = client.get_cookie(COOKIE, path=AUTH).value
    assert refresh(client).status_code == 200
    client.set_cookie(COOKIE, stolen, path=AUTH)
    assert_error(refresh(client), 401, "invalid_token")
    assert_error(client.get(f"{AUTH}/me", headers=bearer(ada["access_token"])), 401, "invalid_token")



def signed_in_hint(response):
    """The qm_signed_in Set-Cookie: (value, {attribute: value}): a flag with no secret in it."""
    [header] = [header for header in response.headers.getlist("Set-Cookie") if header.startswith("qm_signed_in=")]
    first, *rest = header.split("; ")
    return first.partition("=")[2], {part.partition("=")[0].lower(): part.partition("=")[2] for part in rest}


def test_a_readable_flag_beside_the_cookie_says_a_session_may_be_restored(client):
    """So a signed-out page asks for no refresh that would be refused (a 401 in the browser's console)."""
    register(client)
    response = client.post(f"{AUTH}/login", json={"email": "ada@example.com", "password": PASSWORD})
    value, attributes = signed_in_hint(response)
    assert value == "1" and "httponly" not in attributes
    assert (attributes["path"], attributes["samesite"], attributes["max-age"]) == ("/", "Strict", str(REFRESH_TTL))
    assert signed_in_hint(refresh(client))[0] == "1"
    ended = client.post(f"{AUTH}/logout", headers=bearer(response.get_json()["access_token"]))
    assert ended.status_code == 204
    value, attributes = signed_in_hint(ended)
    assert value == "" and attributes["max-age"] == "0"
