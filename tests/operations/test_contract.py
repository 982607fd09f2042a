"""The running service against its own /openapi.json: Schemathesis generates
valid and invalid requests for every operation and checks each answer. Seeded
and bounded, so a run is repeatable and short. README's lists of settings and
error codes are held to the code too."""
import re

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, ignored_auth, negative_data_rejection,
                                               response_schema_conformance, status_code_conformance)

from app import create_app
from app.config import SETTINGS
from app.errors import ERROR_CODES
from tests.conftest import clean_database
from tests.stubs import OpenAIStub
from tests.support import PASSWORD, LiveServer, bearer, readme_section, settings_for

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection, ignored_auth]
EXAMPLES_PER_OPERATION = 30


@pytest.fixture(scope="module")
def contract_server(pg_server, template_db):
    stub = OpenAIStub()
    with clean_database(pg_server, template_db) as database:
        server = LiveServer(settings_for(database.app_url, OPENAI_BASE_URL=f"{stub.url}/v1"))
        try:
            yield server
        finally:
            server.stop()
            stub.stop()


def _sent(response, status):
    """A setup call's answer, which must be `status`: a failed setup would leave
    the generated calls stopping at 401 or 402 and the contract barely tried."""
    assert response.status_code == status, (response.request.url, response.text)
    return response.json()


class Account:
    """A funded user holding a key, so generated calls reach deep. The contract calls
    POST /auth/logout with its token too, which ends every token issued so far: a 401
    to the token means logging in again, or every later call would stop at 401."""

    CREDENTIALS = {"email": "contract@example.com", "password": PASSWORD}

    def __init__(self, url):
        self.url = url
        _sent(httpx.post(f"{url}/api/v1/auth/register", json=self.CREDENTIALS | {"username": "contract"}), 201)
        self.log_in()
        _sent(httpx.post(f"{url}/api/v1/balance/funds", json={"amount": "1000"}, headers=self.headers), 201)
        _sent(httpx.post(f"{url}/api/v1/keys", json={"provider": "openai", "api_key": "sk-proj-contract-00000000000"},
                         headers=self.headers), 201)
        profile = _sent(httpx.get(f"{url}/api/v1/auth/me", headers=self.headers), 200)
        assert profile["balance"]["available_balance"] == "1000.00"

    def log_in(self):
        answer = _sent(httpx.post(f"{self.url}/api/v1/auth/login", json=self.CREDENTIALS), 200)
        self.headers = bearer(answer["access_token"])


@pytest.fixture(scope="module")
def account(contract_server):
    return Account(contract_server.url)


def _document():
    """The document as the service serves it (built without a database)."""
    app = create_app(settings_for("postgresql://unused@127.0.0.1:1/unused"))
    return app.test_client().get("/openapi.json").get_json()


schema = schemathesis.openapi.from_dict(_document())
schema.config.generation.update(max_examples=EXAMPLES_PER_OPERATION, deterministic=True)
# A body over 1 MiB is refused with 413 before it is read; a negative case that
# long (a thousand-item list, say) is rejected all the same.
rejection = schema.config.checks.negative_data_rejection
rejection.expected_statuses = [*rejection.expected_statuses, "413"]


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_the_service_keeps_its_contract(case, contract_server, account):
    headers = _credentials_for(case, account)
    response = case.call_and_validate(base_url=contract_server.url, headers=headers, checks=CHECKS)
    if headers is not None and response.status_code == 401:
        account.log_in()


def _credentials_for(case, account):
    """The account's token, except for a case generated to lack valid credentials: that one
    goes as generated, as Schemathesis' own auth would send it, and must meet a 401. With the
    token put back such a case can be a valid request (say its other flaw is an unknown query
    parameter whose empty-list value is sent as nothing) and its 200 would read as accepted
    invalid data. The auth is not Schemathesis' own because that resolves credentials for the
    coverage cases at collection, before the server and the account exist."""
    return None if case.operation.schema.is_security_param_negated(case) else account.headers


def test_readme_configuration_lists_every_setting():
    listed = set(re.findall(r"`([A-Z][A-Z0-9_]*)`", readme_section("Configuration")))
    assert sorted(set(SETTINGS) - listed) == []


def test_readme_lists_every_error_code_under_its_status():
    rows = re.findall(r"^\| ([0-9]{3}) \| (.*) \|$", readme_section("Errors"), re.M)
    listed = {int(status): set(re.findall(r"`([a-z_]+)`", codes)) for status, codes in rows}
    assert {status: sorted(set(codes) - listed.get(status, set())) for status, codes in ERROR_CODES.items()} \
        == {status: [] for status in ERROR_CODES}
