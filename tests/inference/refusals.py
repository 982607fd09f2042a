"""What the inference tests that go through the Flask test client share: the
app with the stubs as providers and the operator's house keys for both
(`settings`), a funded user (`token`), and the checks that a request was
refused in its format's shape, naming the field, with nothing held or sent."""
import pytest

from tests.support import HOUSE_ANTHROPIC, HOUSE_OPENAI, user


@pytest.fixture
def settings(stubbed_settings):
    return {**stubbed_settings, "OPENAI_API_KEY": HOUSE_OPENAI, "ANTHROPIC_API_KEY": HOUSE_ANTHROPIC}


@pytest.fixture
def token(client):
    return user(client, funds="5")


def assert_refused_in_openais_shape(response, field):
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", field)


def assert_refused_in_anthropics_shape(response, field):
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert f"({field}: " in body["error"]["message"]


def assert_nothing_happened(database, stubs):
    """Nothing was held or charged, and no provider was called."""
    assert database.query("SELECT count(*) FROM transactions WHERE type <> 'deposit'") == [(0,)]
    assert stubs[0].requests == [] and stubs[1].requests == []
