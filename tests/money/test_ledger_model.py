"""SPEC §5 as a model: random sequences of top-ups (plain, keyed, retried, key
reused with another body), holds and releases, checked after every step against
a plain Python model of the balance, GET /balance, and README's ledger query."""
import re
import uuid
from decimal import Decimal

import psycopg2
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from tests.support import bearer, login, readme_ledger_query, register

FUNDS = "/api/v1/balance/funds"
BALANCE = "/api/v1/balance"
JSON = "application/json"
MONEY_TEXT = re.compile(r"^[0-9]+\.[0-9]{2,10}$")
TINY = Decimal("0.0000000001")  # NUMERIC(20,10)'s smallest step


def scaled(places, largest):
    """Decimals in (0, largest] with at most `places` decimal places."""
    return st.integers(1, int(largest * 10 ** places)).map(lambda n: Decimal(n).scaleb(-places))


# A top-up: 0.01..50 with 0–2 decimals.
TOPUP_AMOUNTS = st.integers(0, 2).flatmap(lambda places: scaled(places, 50))
# A hold: up to 10 decimals, often more than the whole balance.
HOLD_AMOUNTS = st.integers(0, 10).flatmap(lambda places: scaled(places, 60))


def users_ledger_query():
    """README's ledger check narrowed to one user (the parameter): an example
    checks only its own user, so a bad example fails alone and shrinking does
    not scan every earlier example's rows."""
    every_user = readme_ledger_query().strip().rstrip(";")
    return f"SELECT * FROM ({every_user}) AS mismatch WHERE mismatch.user_id = %s"


def topup_body(amount, as_number):
    """The raw JSON body: the amount as a string or as a JSON number."""
    return f'{{"amount": {amount}}}' if as_number else f'{{"amount": "{amount}"}}'


class LedgerMachine(RuleBasedStateMachine):
    """Bound to the test's `client` and `database` by `bind`; each example is a
    fresh user."""
    client = None
    database = None

    @classmethod
    def bind(cls, client, database):
        return type(cls.__name__, (cls,), {"client": client, "database": database})

    def __init__(self):
        super().__init__()
        name = uuid.uuid4().hex[:16]
        email = f"{name}@example.com"
        self.user_id = register(self.client, email=email, username=name)["id"]
        self.auth = bearer(login(self.client, email=email)["access_token"])
        self.conn = psycopg2.connect(self.database.app_url)  # the service's own login
        self.ledger_query = users_ledger_query()
        # The model.
        self.total = Decimal(0)
        self.spent = Decimal(0)
        self.open_holds = {}      # hold id -> amount
        self.released = {}        # hold id -> amount of the hold
        self.transactions = 0
        # Keyed top-ups that succeeded: (key, raw body, amount, status, response bytes).
        self.keyed = []

    def teardown(self):
        self.conn.close()

    @property
    def available(self):
        return self.total - self.spent

    # ------------------------------------------------------------ HTTP top-ups

    def post_funds(self, body, key=None):
        headers = dict(self.auth)
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.client.post(FUNDS, data=body, content_type=JSON, headers=headers)

    @rule(amount=TOPUP_AMOUNTS, as_number=st.booleans(), keyed=st.booleans())
    def top_up(self, amount, as_number, keyed):
        body = topup_body(amount, as_number)
        key = f"topup-{uuid.uuid4()}" if keyed else None
        response = self.post_funds(body, key)
        assert response.status_code == 201, response.get_data(as_text=True)
        assert "Idempotent-Replayed" not in response.headers
        self.total += amount
        self.transactions += 1
        answer = response.get_json()
        assert answer["transaction"]["type"] == "deposit"
        assert Decimal(answer["transaction"]["amount"]) == amount
        assert Decimal(answer["transaction"]["available_after"]) == self.available
        assert Decimal(answer["balance"]["total_balance"]) == self.total
        assert Decimal(answer["balance"]["available_balance"]) == self.available
        if keyed:
            self.keyed.append((key, body, amount, response.status_code, response.get_data()))

    @precondition(lambda self: self.keyed)
    @rule(data=st.data())
    def retry_keyed_top_up(self, data):
        key, body, _, status, first = data.draw(st.sampled_from(self.keyed), label="earlier top-up")
        response = self.post_funds(body, key)
        assert response.status_code == status, response.get_data(as_text=True)
        assert response.headers.get("Idempotent-Replayed") == "true"
        assert response.get_data() == first

    @precondition(lambda self: self.keyed)
    @rule(data=st.data(), as_number=st.booleans())
    def reuse_key_with_another_amount(self, data, as_number):
        key, _, amount, _, _ = data.draw(st.sampled_from(self.keyed), label="earlier top-up")
        other = data.draw(TOPUP_AMOUNTS.filter(lambda value: value != amount), label="other amount")
        response = self.post_funds(topup_body(other, as_number), key)
        assert response.status_code == 422, response.get_data(as_text=True)
        assert response.get_json()["error"]["code"] == "idempotency_key_reused"
        assert "Idempotent-Replayed" not in response.headers

    # ------------------------------------------------------------ procedures as app_user

    def call(self, sql, params):
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
        self.conn.commit()
        return row

    @rule(data=st.data())
    def hold(self, data):
        left = self.available
        choices = [HOLD_AMOUNTS, st.just(left + TINY)]
        if left > 0:
            # Exactly all of it, a hair less, or some part of it.
            choices += [st.sampled_from([left, max(left - TINY, TINY)]),
                        st.integers(1, 10 ** 6).map(lambda n: max((left * n / 10 ** 6).quantize(TINY), TINY))]
        amount = data.draw(st.one_of(choices), label="hold amount")
        ok, transaction_id, available, reason = self.call(
            "SELECT ok, transaction_id, available, reason FROM deduct_user_balance(%s::uuid, %s)",
            (self.user_id, amount))
        if self.available >= amount:
            assert (ok, reason) == (True, None)
            assert transaction_id is not None and transaction_id not in self.open_holds
            self.spent += amount
            self.open_holds[transaction_id] = amount
            self.transactions += 1
        else:
            assert (ok, transaction_id, reason) == (False, None, "insufficient_funds")
        assert available == self.available

    @precondition(lambda self: self.open_holds)
    @rule(data=st.data())
    def release(self, data):
        hold_id = data.draw(st.sampled_from(sorted(self.open_holds)), label="hold")
        held = self.open_holds[hold_id]
        part = data.draw(st.one_of(st.just(Decimal(0)), st.just(held),
                                   st.integers(0, 10 ** 10).map(lambda n: (held * n / 10 ** 10).quantize(TINY))),
                         label="released part")
        ok, transaction_id, available, reason = self.call(
            "SELECT ok, transaction_id, available, reason FROM add_user_funds(%s::uuid, %s, 'release', %s)",
            (self.user_id, part, hold_id))
        assert (ok, reason) == (True, None)
        assert transaction_id is not None
        self.spent -= part
        self.released[hold_id] = self.open_holds.pop(hold_id)
        self.transactions += 1
        assert available == self.available

    @precondition(lambda self: self.released)
    @rule(data=st.data())
    def release_again(self, data):
        hold_id = data.draw(st.sampled_from(sorted(self.released)), label="released hold")
        held = self.released[hold_id]
        part = data.draw(st.sampled_from([Decimal(0), held, (held / 2).quantize(TINY)]), label="released part")
        ok, transaction_id, available, reason = self.call(
            "SELECT ok, transaction_id, available, reason FROM add_user_funds(%s::uuid, %s, 'release', %s)",
            (self.user_id, part, hold_id))
        assert (ok, transaction_id, reason) == (False, None, "already_released")
        assert available == self.available

    # ------------------------------------------------------------ after every step

    @invariant()
    def api_balance_matches_the_model(self):
        response = self.client.get(BALANCE, headers=self.auth)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        for field in ("total_balance", "spent_balance", "held_balance", "available_balance"):
            assert MONEY_TEXT.match(body[field]), (field, body[field])
        assert Decimal(body["total_balance"]) == self.total
        assert Decimal(body["spent_balance"]) == self.spent
        assert Decimal(body["available_balance"]) == self.available
        assert Decimal(body["held_balance"]) == sum(self.open_holds.values(), Decimal(0))
        assert body["currency"] == "USD"

    @invariant()
    def ledger_adds_up(self):
        assert self.database.query(self.ledger_query, (self.user_id,)) == []
        count = self.database.query("SELECT count(*) FROM transactions WHERE user_id = %s", (self.user_id,))
        assert count[0][0] == self.transactions


def test_the_ledger_follows_the_model(client, database):
    run_state_machine_as_test(
        LedgerMachine.bind(client, database),
        settings=settings(max_examples=25, stateful_step_count=20, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]),
    )
