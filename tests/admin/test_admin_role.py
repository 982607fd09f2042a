"""The admin role: granted and revoked by the owner, checked on every request,
never opened by an access key, and out of reach of the service's own login."""
from contextlib import closing

import psycopg2
import psycopg2.errors
import pytest

from tests.support import admin, assert_error, bearer, user, user_id_of

USERS = "/api/v1/admin/users"


def test_only_an_admin_opens_the_admin_api(app, client, database):
    root = admin(app, client)
    ada = user(client, "ada")
    assert client.get(USERS, headers=bearer(root)).status_code == 200
    assert_error(client.get(USERS, headers=bearer(ada)), 403, "admin_required")
    assert_error(client.get(USERS), 401, "unauthorized")
    # An access key of the admin's own never opens it.
    made = client.post("/api/v1/access-keys", json={"name": "script"}, headers=bearer(root))
    assert made.status_code == 201
    assert_error(client.get(USERS, headers=bearer(made.get_json()["key"])), 401, "invalid_token")


def test_a_revoked_admin_is_refused_on_the_very_next_request(app, client, database):
    root = admin(app, client)
    assert client.get(USERS, headers=bearer(root)).status_code == 200
    result = app.test_cli_runner().invoke(args=["admin", "revoke", "root@example.com", "--reason", "left the team"])
    assert result.exit_code == 0, result.output
    # The same token, not expired: the role is read at each request, never from the token.
    assert_error(client.get(USERS, headers=bearer(root)), 403, "admin_required")
    # Still an ordinary user for their own money.
    assert client.get("/api/v1/balance", headers=bearer(root)).status_code == 200
    assert database.query("SELECT action, admin_id, reason FROM admin_actions ORDER BY id") == [
        ("grant_admin", None, "test operator"), ("revoke_admin", None, "left the team")]


def test_granting_names_an_existing_account(app, client, database):
    result = app.test_cli_runner().invoke(args=["admin", "grant", "nobody@example.com"])
    assert result.exit_code != 0 and "no account with email nobody@example.com" in result.output
    result = app.test_cli_runner().invoke(args=["admin", "grant", "not-an-email"])
    assert result.exit_code != 0 and "Invalid value for EMAIL" in result.output
    assert database.query("SELECT count(*) FROM admins") == [(0,)]


@pytest.mark.parametrize("statement", [
    "INSERT INTO admins (user_id) SELECT id FROM users",
    "DELETE FROM admins",
    "SELECT * FROM admin_actions",
    "INSERT INTO admin_actions (action, reason) VALUES ('credit', 'x')",
    "SELECT * FROM debit_user_balance(gen_random_uuid(), 1, '', '{}')",
])
def test_the_service_login_cannot_make_admins_read_the_audit_or_debit(database, statement):
    with closing(psycopg2.connect(database.app_url)) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute(statement)


def test_the_admin_functions_check_the_admin_themselves(app, client, database):
    """Called straight by the service's login with a non-admin's id, each refuses and changes nothing."""
    user(client, "ada", funds="10.00")
    user(client, "bob", funds="10.00")
    ada, bob = user_id_of(database, "ada@example.com"), user_id_of(database, "bob@example.com")
    with closing(psycopg2.connect(database.app_url)) as conn, conn, conn.cursor() as cur:
        cur.execute("SELECT ok, reason FROM admin_move_money(%s, %s, 'credit', 5, 'me', '{}')", (ada, bob))
        assert cur.fetchone() == (False, "not_admin")
        cur.execute("SELECT ok, reason FROM admin_set_user_active(%s, %s, false, 'me')", (ada, bob))
        assert cur.fetchone() == (False, "not_admin")
        cur.execute("SELECT ok, reason FROM admin_record(%s, 'reconcile', 'me', '{}')", (ada,))
        assert cur.fetchone() == (False, "not_admin")
        cur.execute("SELECT count(*) FROM admin_audit_log(%s, NULL, NULL, NULL, NULL, NULL, NULL, 10)", (ada,))
        assert cur.fetchone() == (0,)
    assert database.query("SELECT count(*) FROM admin_actions") == [(0,)]
    assert database.query("SELECT sum(total_balance) FROM user_balance") == [(20,)]
