"""The running service against its own /openapi.json: Schemathesis generates
valid and invalid requests for every operation and checks each answer. Seeded
and bounded, so a run is repeatable and short."""
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, ignored_auth, negative_data_rejection,
                                               response_schema_conformance, status_code_conformance)

from app import create_app
from tests.conftest import clean_database
from tests.stubs import OpenAIStub
from tests.support import PASSWORD, LiveServer, bearer, settings_for

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


@pytest.fixture(scope="module")
def account(contract_server):
    """A funded user holding a key and a session, so generated calls reach deep."""
    url = contract_server.url
    credentials = {"email": "contract@example.com", "password": PASSWORD}
    httpx.post(f"{url}/api/v1/auth/register", json=credentials | {"username": "contract"})
    headers = bearer(httpx.post(f"{url}/api/v1/auth/login", json=credentials).json()["access_token"])
    httpx.post(f"{url}/api/v1/balance/funds", json={"amount": "1000"}, headers=headers)
    httpx.post(f"{url}/api/v1/keys", json={"provider": "openai", "api_key": "sk-proj-contract-00000000000"},
               headers=headers)
    return headers


def _document():
    """The document as the service serves it (built without a database)."""
    app = create_app(settings_for("postgresql://unused@127.0.0.1:1/unused"))
    return app.test_client().get("/openapi.json").get_json()


schema = schemathesis.openapi.from_dict(_document())
schema.config.generation.update(max_examples=EXAMPLES_PER_OPERATION, deterministic=True)


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_the_service_keeps_its_contract(case, contract_server, account):
    case.call_and_validate(base_url=contract_server.url, headers=account, checks=CHECKS)
