"""The admin pages in a real browser: an admin finds a user, credits and
debits them with a reason, disables them, edits the catalog, reconciles holds
and reads the audit log, each step checked against the database; a non-admin
sees no admin navigation and meets the API's 403 on an admin page."""
import re

import httpx
import pytest

from tests.browser import screenshot, settled
from tests.conftest import clean_database
from tests.support import PASSWORD, live_service

ADMIN_LINKS = ("Users", "Catalog admin", "Holds", "Audit log")


@pytest.fixture(scope="module")
def server(pg_server, template_db):
    with clean_database(pg_server, template_db) as database, live_service(database) as live:
        for name in ("root", "ada"):
            answer = httpx.post(f"{live.url}/api/v1/auth/register",
                                json={"email": f"{name}@example.com", "username": name, "password": PASSWORD})
            assert answer.status_code == 201
        # As `flask admin grant` does, as the owner.
        database.query("INSERT INTO admins (user_id) SELECT id FROM users WHERE email = 'root@example.com'")
        yield live


def sign_in(page, server, name):
    from playwright.sync_api import expect
    page.goto(f"{server.url}/console/signin")
    page.get_by_label("Email").fill(f"{name}@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{server.url}/console/overview")
    settled(page)


def go(page, name):
    page.get_by_role("navigation").get_by_role("link", name=name, exact=True).click()
    settled(page)


def test_a_non_admin_sees_no_admin_navigation_and_meets_403(server, page):
    from playwright.sync_api import expect
    sign_in(page, server, "ada")
    navigation = page.get_by_role("navigation")
    expect(navigation.get_by_role("link", name="Overview")).to_be_visible()
    for name in ADMIN_LINKS:
        expect(navigation.get_by_role("link", name=name, exact=True)).to_have_count(0)
    page.goto(f"{server.url}/console/admin/users")
    expect(page.get_by_role("alert")).to_contain_text("Only an admin may do this")
    assert page.errors == []


def test_an_admin_works_through_every_admin_page(server, page):
    from playwright.sync_api import expect
    database = server.database
    sign_in(page, server, "root")

    go(page, "Users")
    page.get_by_label("Email or username").fill("ada")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="ada@example.com").click()
    settled(page)
    expect(page.get_by_role("heading", name="ada@example.com")).to_be_visible()

    credit = page.locator("form").filter(has=page.get_by_role("button", name="Credit"))
    credit.get_by_label("Amount in USD").fill("2.50")
    credit.get_by_label("Reason (kept in the audit log)").fill("ticket 12: refund")
    credit.get_by_role("button", name="Credit").click()
    expect(credit.get_by_role("alert")).to_contain_text("Credited $2.50.")
    expect(page.locator(".figure-available_balance dd")).to_have_text("$2.50")

    debit = page.locator("form").filter(has=page.get_by_role("button", name="Debit"))
    debit.get_by_label("Amount in USD").fill("3")
    debit.get_by_label("Reason (kept in the audit log)").fill("chargeback")
    debit.get_by_role("button", name="Debit").click()
    expect(debit.locator("[data-field=amount] .field-error")).to_contain_text("a debit never goes below zero")

    disable = page.locator("form").filter(has=page.get_by_role("button", name="Disable"))
    disable.get_by_label("Reason (kept in the audit log)").fill("abuse report")
    disable.get_by_role("button", name="Disable").click()
    expect(page.locator("[data-user-state]")).to_have_attribute("data-user-state", "disabled")
    assert database.query("SELECT is_active FROM users WHERE email = 'ada@example.com'") == [(False,)]

    go(page, "Catalog admin")
    toggle = page.locator("form").filter(has=page.get_by_role("button", name="Apply"))
    toggle.get_by_label("Model").select_option("local/reverse")
    toggle.get_by_label("Reason (kept in the audit log)").fill("retired")
    toggle.get_by_role("button", name="Apply").click()
    expect(page.locator("tr[data-model='local/reverse']")).to_contain_text("disabled")
    edit = page.locator("form").filter(has=page.get_by_role("button", name="Change"))
    edit.get_by_label("Model").select_option("local/echo")
    edit.get_by_label("Field").select_option("input_price_per_mtok")
    edit.get_by_label("New value").fill("-1")
    edit.get_by_label("Reason (kept in the audit log)").fill("typo")
    edit.get_by_role("button", name="Change").click()
    expect(edit.get_by_role("alert")).to_contain_text("changes.input_price_per_mtok")
    schedule = page.locator("form").filter(has=page.get_by_role("button", name="Schedule"))
    schedule.get_by_label("Model").select_option("local/echo")
    schedule.get_by_label("Input price per million tokens").fill("0.02")
    schedule.get_by_label("Output price per million tokens").fill("0.04")
    schedule.get_by_label("Reason (kept in the audit log)").fill("new year")
    schedule.get_by_role("button", name="Schedule").click()  # no time given: refused, naming the field
    expect(schedule.locator("[data-field=effective_from] .field-error")).not_to_be_empty()
    schedule.get_by_label("In force from").fill("2031-01-01T00:00")
    schedule.get_by_role("button", name="Schedule").click()
    expect(schedule.get_by_role("alert")).to_contain_text("Scheduled version")
    assert database.query("SELECT count(*) FROM model_prices WHERE model_id = 'local/echo'"
                          " AND effective_from > now()") == [(1,)]

    go(page, "Holds")
    expect(page.get_by_text("No hold is past its deadline.")).to_be_visible()
    reconcile = page.locator("form").filter(has=page.get_by_role("button", name="Reconcile now"))
    reconcile.get_by_label("Reason (kept in the audit log)").fill("weekly check")
    reconcile.get_by_role("button", name="Reconcile now").click()
    expect(reconcile.get_by_role("alert")).to_contain_text("Returned 0 holds.")
    expect(page.locator("tr[data-house-key=OPENAI_API_KEY]")).to_contain_text("unset")

    go(page, "Audit log")
    for reason in ("ticket 12: refund", "abuse report", "retired", "new year", "weekly check"):
        expect(page.locator("tr[data-audit]").filter(has_text=reason)).to_have_count(1)
    page.get_by_label("Action").select_option("credit")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tr[data-audit]")).to_have_count(1)
    assert database.query("SELECT action FROM admin_actions ORDER BY id") == [
        ("credit",), ("disable_user",), ("disable_model",), ("schedule_price",), ("reconcile",)]
    assert not re.search(r"sk-[A-Za-z0-9]", page.content())
    assert page.errors == []
    for name in ("users", "models", "holds", "audit"):
        screenshot(page, f"{server.url}/console/admin/{name}", f"admin-{name}")
