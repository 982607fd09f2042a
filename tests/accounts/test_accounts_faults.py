"""Accounts under faults and hostile timing: the login lockout against parallel
guesses, emails that lower() lengthens, cursors PostgreSQL cannot read, the
service's own words for bad fields, and duplicates that never make PostgreSQL
log a failing statement."""
import threading
import time
from contextlib import closing

import httpx
import psycopg2
import pytest
from pydantic import ValidationError

from app import close_app, create_app, schemas
from app.api.bodies import validation_details
from app.api.pagination import encode_cursor
from app.extensions import db
from database.vocab import CAPABILITIES
from tests.conftest import clean_database
from tests.support import PASSWORD, LiveServer, assert_error, bearer, login, register, settings_for

API = "/api/v1"
LOGIN, REGISTER = f"{API}/auth/login", f"{API}/auth/register"
THRESHOLD, LOCK_SECONDS = 10, 600
# Enough PBKDF2 work that parallel guesses overlap while they are checked.
SLOW_ITERATIONS = 100_000
OPENAI_KEY = "sk-proj-Abc123_secretVALUE-0000wxyz"


# ----------------------------------------------------------------- item 3: the lockout in parallel

@pytest.fixture(scope="module")
def lockout_server(pg_server, template_db):
    """gunicorn (2 workers × 16 threads) on a database of its own, ada registered."""
    with clean_database(pg_server, template_db) as database:
        server = LiveServer(settings_for(database.app_url, LOGIN_LOCKOUT_THRESHOLD=THRESHOLD,
                                         LOGIN_LOCKOUT_SECONDS=LOCK_SECONDS, PASSWORD_ITERATIONS=SLOW_ITERATIONS))
        try:
            response = httpx.post(server.url + REGISTER, timeout=30,
                                  json={"email": "ada@example.com", "username": "ada", "password": PASSWORD})
            assert response.status_code == 201, response.text
            yield server, database
        finally:
            server.stop()


def logins_at_once(url, email, passwords):
    """Sends one login per password, all released together; their responses."""
    start = threading.Barrier(len(passwords))
    responses = [None] * len(passwords)

    def send(index):
        with httpx.Client(base_url=url, timeout=60) as client:
            start.wait()
            responses[index] = client.post(LOGIN, json={"email": email, "password": passwords[index]})

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(passwords))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


def attempts_row(database, email):
    """(counted attempts, locked now) from the email's login_attempts row, or None."""
    rows = database.query("SELECT failures, coalesce(locked_until > now(), false) FROM login_attempts "
                          "WHERE email = %s", (email,))
    return rows[0] if rows else None


@pytest.mark.parametrize("email", ["ada@example.com", "ghost@example.com"])
def test_parallel_guesses_past_the_threshold_are_refused_unchecked(lockout_server, email):
    server, database = lockout_server
    responses = logins_at_once(server.url, email, ["wrong password"] * 18)
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [401] * THRESHOLD + [429] * 8
    refused = [response for response in responses if response.status_code == 429]
    assert {response.json()["error"]["code"] for response in refused} == {"rate_limited"}
    assert all(1 <= int(response.headers["Retry-After"]) <= LOCK_SECONDS for response in refused)
    assert attempts_row(database, email) == (THRESHOLD, True)
    # Locked: even the right password is refused, for a known email and an unknown one alike.
    locked = httpx.post(server.url + LOGIN, json={"email": email, "password": PASSWORD})
    assert locked.status_code == 429 and locked.json()["error"]["code"] == "rate_limited"


def test_a_right_password_clears_the_count_of_parallel_guesses(lockout_server):
    server, database = lockout_server
    register_response = httpx.post(server.url + REGISTER, timeout=30, json={
        "email": "bob@example.com", "username": "bob", "password": PASSWORD})
    assert register_response.status_code == 201
    first = logins_at_once(server.url, "bob@example.com", ["wrong password"] * (THRESHOLD - 1))
    assert [response.status_code for response in first] == [401] * (THRESHOLD - 1)
    assert attempts_row(database, "bob@example.com") == (THRESHOLD - 1, False)

    assert httpx.post(server.url + LOGIN, timeout=30,
                      json={"email": "bob@example.com", "password": PASSWORD}).status_code == 200
    assert attempts_row(database, "bob@example.com") is None
    # Were the count kept, only one of these would be checked.
    again = logins_at_once(server.url, "bob@example.com", ["wrong password"] * (THRESHOLD - 1) + [PASSWORD])
    assert sorted(response.status_code for response in again) == [200] + [401] * (THRESHOLD - 1)


# ----------------------------------------------------------------- item 7: lengths after lower()

def email_of_length(length, upper_i):
    """An email of `length` characters once lower-cased, made of "İ"
    (two characters when lower-cased) as far as it goes."""
    domain = "@a.bc"
    local = length - len(domain)
    return "İ" * upper_i + "x" * (local - 2 * upper_i) + domain


def test_an_email_that_lower_lengthens_past_the_limit_is_refused(client, database):
    email = "İ" * 249 + "@a.bc"
    assert len(email) == 254 and len(email.lower()) == 503
    error = assert_error(client.post(REGISTER, json={"email": email, "username": "ada", "password": PASSWORD}),
                         400, "validation_error")
    assert error["details"] == {"email": "must be at most 254 characters"}
    error = assert_error(client.post(LOGIN, json={"email": email, "password": PASSWORD}), 400, "validation_error")
    assert error["details"] == {"email": "must be at most 254 characters"}
    assert database.query("SELECT count(*) FROM users") == [(0,)]
    assert database.query("SELECT count(*) FROM login_attempts") == [(0,)]


def test_an_email_is_measured_as_stored(client, database):
    longest = email_of_length(254, upper_i=100)
    assert len(longest) == 154 and len(longest.lower()) == 254
    register(client, email=longest)
    assert login(client, email=longest.upper())["user"]["email"] == longest.lower()
    too_long = email_of_length(255, upper_i=100)
    error = assert_error(client.post(REGISTER, json={"email": too_long, "username": "bob", "password": PASSWORD}),
                         400, "validation_error")
    assert error["details"] == {"email": "must be at most 254 characters"}
    assert database.query("SELECT email FROM users") == [(longest.lower(),)]


# ----------------------------------------------------------------- item 8: cursors PostgreSQL cannot read

def time_cursor(path, timestamp):
    """The query of a page of `path` after a cursor of the form this service issues, around `timestamp`
    (the activity's every-entry view pages by time; its one row per call, by ledger id)."""
    if path.endswith("/activity"):
        return {"cursor": encode_cursor(timestamp, "transaction", 1), "view": "entries"}
    return {"cursor": encode_cursor(timestamp, "00000000-0000-4000-8000-000000000001")}


LISTS = [f"{API}/chat/sessions", f"{API}/activity"]
UNREADABLE_TIMES = {
    "offset +20:00": "2024-05-01T10:00:00+20:00",
    "offset -16:00": "2024-05-01T10:00:00-16:00",
    "offset in fractions of a second": "2024-05-01T10:00:00+05:00:30.500000",
    "no zone": "2024-05-01T10:00:00",
}


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("timestamp", UNREADABLE_TIMES.values(), ids=UNREADABLE_TIMES.keys())
def test_a_cursor_time_postgresql_cannot_read_is_a_bad_cursor(client, token, path, timestamp):
    response = client.get(path, query_string=time_cursor(path, timestamp), headers=bearer(token))
    error = assert_error(response, 400, "validation_error")
    assert error["details"] == {"cursor": "is not a cursor this service issued"}


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("timestamp", ["2024-05-01T10:00:00+15:59", "2024-05-01T10:00:00-15:59:59",
                                       "0001-01-01T00:00:00+15:00", "9999-12-31T23:59:59.999999-15:00"])
def test_a_cursor_time_at_the_edges_postgresql_reads_is_answered(client, token, path, timestamp):
    response = client.get(path, query_string=time_cursor(path, timestamp), headers=bearer(token))
    assert response.status_code == 200, response.get_json()


# ----------------------------------------------------------------- item 13: the service's own words

TOO_MANY_CAPABILITIES = ["coding"] * 20
MESSAGES = {
    "short password": (REGISTER, {"email": "a@b.co", "username": "ada", "password": "short"},
                       "password", "must be at least 8 characters"),
    "long username": (REGISTER, {"email": "a@b.co", "username": "a" * 40, "password": PASSWORD},
                      "username", "must be at most 32 characters"),
    "username characters": (REGISTER, {"email": "a@b.co", "username": "ada lovelace", "password": PASSWORD},
                            "username", "may hold only letters, digits, '_', '.' and '-'"),
    "missing field": (REGISTER, {"email": "a@b.co", "password": PASSWORD}, "username", "is required"),
    "unknown field": (REGISTER, {"email": "a@b.co", "username": "ada", "password": PASSWORD, "admin": True},
                      "admin", "is not a field of this request"),
    "number for text": (REGISTER, {"email": "a@b.co", "username": 7, "password": PASSWORD},
                        "username", "must be a string"),
    "empty password at login": (LOGIN, {"email": "a@b.co", "password": ""}, "password", "must not be empty"),
    "negative top-up": (f"{API}/balance/funds", {"amount": "-5"}, "amount", "must be positive"),
    "negative top-up number": (f"{API}/balance/funds", {"amount": -5}, "amount", "must be positive"),
    "zero top-up": (f"{API}/balance/funds", {"amount": "0"}, "amount", "must be positive"),
    "top-up in words": (f"{API}/balance/funds", {"amount": "five"}, "amount",
                        'must be a decimal number such as "12.50"'),
    "top-up in fractions of a cent": (f"{API}/balance/funds", {"amount": "1.005"}, "amount",
                                      "must have at most 2 decimal places"),
    "unknown provider": (f"{API}/keys", {"provider": "acme", "api_key": OPENAI_KEY}, "provider",
                         "must be one of openai, anthropic"),
    "short key": (f"{API}/keys", {"provider": "openai", "api_key": "sk-short"}, "api_key",
                  "must be at least 16 characters"),
    "empty label": (f"{API}/keys", {"provider": "openai", "api_key": OPENAI_KEY, "label": ""}, "label",
                    "must not be empty"),
    "model id form": (f"{API}/chat/sessions", {"model_id": "gpt-4o"}, "model_id",
                      'must be a model id such as "openai/gpt-4o-mini"'),
    "task too long": (f"{API}/models/recommend", {"task": "x" * 2001}, "task", "must be at most 2000 characters"),
    "too many capabilities": (f"{API}/models/recommend", {"task": "code", "capabilities": TOO_MANY_CAPABILITIES},
                              "capabilities", f"must be at most {len(CAPABILITIES)} items"),
    "unknown capability": (f"{API}/models/recommend", {"task": "code", "capabilities": ["telepathy"]},
                           "capabilities.0", "must be one of " + ", ".join(CAPABILITIES)),
    "limit below one": (f"{API}/models/recommend", {"task": "code", "limit": 0}, "limit", "must be at least 1"),
    "limit as text": (f"{API}/models/recommend", {"task": "code", "limit": "5"}, "limit", "must be an integer"),
    "negative price": (f"{API}/models/recommend", {"task": "code", "max_price_per_mtok": "-1"},
                       "max_price_per_mtok", "must not be negative"),
}


@pytest.mark.parametrize("path, body, field, message", MESSAGES.values(), ids=MESSAGES.keys())
def test_a_bad_field_is_told_in_the_services_own_words(client, token, path, body, field, message):
    error = assert_error(client.post(path, json=body, headers=bearer(token)), 400, "validation_error")
    assert error["details"] == {field: message}


@pytest.mark.parametrize("value, message", [(6, "must be at most 5"), (0, "must be at least 1"),
                                            (4.5, "must be an integer"), (True, "must be an integer")])
def test_a_rating_out_of_range_is_told_in_the_services_own_words(client, token, value, message):
    response = client.put(f"{API}/models/local/echo/rating", json={"rating": value}, headers=bearer(token))
    assert assert_error(response, 400, "validation_error")["details"] == {"rating": message}


def test_a_temperature_out_of_range_says_its_bounds(client, token):
    session = client.post(f"{API}/chat/sessions", json={"model_id": "local/echo"}, headers=bearer(token)).get_json()
    response = client.post(f"{API}/chat/sessions/{session['id']}/messages",
                           json={"content": "hi", "temperature": 3, "max_tokens": 0}, headers=bearer(token))
    details = assert_error(response, 400, "validation_error")["details"]
    assert details == {"temperature": "must be at most 2", "max_tokens": "must be at least 1"}


PYDANTIC_WORDING = ("Input should", "Value should", "String should", "List should", "Field required",
                    "Extra inputs", "Value error", "after validation", "Assertion failed")
HOSTILE_VALUES = [None, True, -1, 0, 10 ** 30, "", "x", "x" * 300_000, "-5", [], ["x"] * 50, {}, {"x": 1}]


def request_models():
    return [model for model in vars(schemas).values()
            if isinstance(model, type) and issubclass(model, schemas.Request) and model is not schemas.Request]


@pytest.mark.parametrize("model", request_models(), ids=lambda model: model.__name__)
def test_no_request_field_answers_in_pydantics_words(model):
    """Every field of every request body, given every kind of bad value."""
    seen = 0
    for field in [*model.model_fields, "not_a_field"]:
        for value in HOSTILE_VALUES:
            try:
                model.model_validate({field: value})
            except ValidationError as exc:
                for message in validation_details(exc, {field: value}).values():
                    seen += 1
                    assert not any(words in message for words in PYDANTIC_WORDING), (field, value, message)
    assert seen


# ----------------------------------------------------------------- item 5: duplicates without failing statements

def rollbacks(app, database):
    """The database's count of rolled-back transactions, once every connection
    the app held has ended (a backend reports its counts as it exits)."""
    with app.app_context():
        db.close()
    deadline = time.monotonic() + 30
    while database.query("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = "
                         "'qmarket'", (database.name,)) != [(0,)]:
        assert time.monotonic() < deadline, "the app's connections did not end"
        time.sleep(0.05)
    return database.query("SELECT xact_rollback FROM pg_stat_database WHERE datname = %s", (database.name,))[0][0]


def test_duplicates_are_refused_without_a_failing_statement(settings, database):
    app = create_app(settings)
    try:
        client = app.test_client()
        register(client)
        token = login(client)["access_token"]
        key = {"provider": "openai", "api_key": OPENAI_KEY}
        assert client.post(f"{API}/keys", json=key, headers=bearer(token)).status_code == 201
        before = rollbacks(app, database)

        taken_email = client.post(REGISTER, json={"email": "ADA@example.com", "username": "other",
                                                  "password": PASSWORD})
        assert assert_error(taken_email, 409, "email_taken")["details"] == {"field": "email"}
        taken_username = client.post(REGISTER, json={"email": "other@example.com", "username": "ADA",
                                                     "password": PASSWORD})
        assert assert_error(taken_username, 409, "username_taken")["details"] == {"field": "username"}
        assert_error(client.post(f"{API}/keys", json=key, headers=bearer(token)), 409, "duplicate_key")
        assert rollbacks(app, database) == before
        assert database.query("SELECT count(*) FROM users") == [(1,)]
        assert database.query("SELECT count(*) FROM api_keys") == [(1,)]

        # The count does see a failing INSERT: what the old duplicate paths did.
        with closing(psycopg2.connect(database.app_url, application_name="qmarket")) as conn:
            with pytest.raises(psycopg2.errors.UniqueViolation), conn.cursor() as cursor:
                cursor.execute("INSERT INTO users (email, username, password_hash) VALUES ('ada@example.com', "
                               "'ada2', 'x')")
            conn.rollback()
        assert rollbacks(app, database) == before + 1
    finally:
        close_app(app)
