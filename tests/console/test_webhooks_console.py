"""The console's Webhooks page in Debian's chromium at 1280 px and 390 px:
a webhook is added (its secret shown once, and it is the one the real
receiver's requests verify with), listed with its state, its deliveries shown
as the API pages them, and deleted after a confirmation; a refused URL shows
the API's reason beside the field and adds nothing."""
import httpx
import pytest

from tests.browser import SHOTS, PageErrors, settled
from tests.conftest import clean_database
from tests.console.test_first_hour import context, device, signed_in_page  # noqa: F401 (fixtures)
from tests.stubs import WebhookReceiver, verify_signature
from tests.support import live_service, live_user, raise_alert

LOCAL_RECEIVERS = {"WEBHOOK_ALLOW_HTTP": True, "WEBHOOK_ALLOW_PRIVATE": True, "ALERT_POLL_INTERVAL": 0.2}


@pytest.fixture(scope="module")
def database(pg_server, template_db):
    with clean_database(pg_server, template_db) as database:
        yield database


@pytest.fixture(scope="module")
def server(database):
    """Webhooks may be http:// on 127.0.0.1, where the test's receiver listens."""
    with live_service(database, **LOCAL_RECEIVERS) as live:
        yield live


@pytest.fixture(scope="module")
def strict_server(pg_server, template_db):
    """The production rules: https only, public addresses only."""
    with clean_database(pg_server, template_db) as database, live_service(database) as live:
        yield live


@pytest.fixture
def receiver():
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def account():
    """Makes a new user of a service: (email, API client, user id); the clients are closed after the test."""
    clients = []

    def new_user(server):
        headers, user_id = live_user(server.url, "1")
        clients.append(httpx.Client(base_url=f"{server.url}/api/v1", headers=headers))
        return clients[-1].get("/auth/me").json()["email"], clients[-1], user_id
    yield new_user
    for client in clients:
        client.close()

def fits_the_width(page):
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


def test_a_webhook_is_added_shown_once_delivered_to_and_deleted(server, database, context, receiver, device, account):
    from playwright.sync_api import expect
    email, client, user_id = account(server)
    page = signed_in_page(context, server, email, "webhooks")
    errors = PageErrors()
    errors.watch(page)
    expect(page.get_by_text("No webhooks yet.")).to_be_visible()
    page.get_by_label("URL").fill(f"{receiver.url}/hook")
    page.get_by_role("button", name="Add webhook").click()
    expect(page.locator("[data-secret]")).to_contain_text("never shown again")
    secret = page.locator(".secret-value").inner_text()
    [listed] = client.get("/webhooks").json()["webhooks"]
    assert listed["url"] == f"{receiver.url}/hook" and secret.startswith("whsec_")
    row = page.locator(f"tr[data-webhook='{listed['id']}']")
    expect(row).to_contain_text("No alert sent yet")
    assert fits_the_width(page)

    # An alert reaches the receiver signed with the secret the page showed.
    assert raise_alert(database, user_id)
    [request] = receiver.wait_for(1)
    verify_signature(secret, request)
    deliveries = f"/webhooks/{listed['id']}/deliveries"
    for _ in range(100):
        if client.get(deliveries).json()["deliveries"][0]["status"] == "delivered":
            break
        page.wait_for_timeout(100)
    page.reload()
    settled(page)
    expect(page.locator(".secret-value")).to_have_count(0)  # shown that once
    expect(row.locator("[data-state]")).to_have_text("Last alert delivered")
    row.get_by_role("button", name="Deliveries").click()
    shown = page.locator("tr[data-delivery]")
    expect(shown).to_have_count(1)
    assert shown.evaluate_all("rows => rows.map(row => row.dataset.delivery)") == [
        entry["id"] for entry in client.get(deliveries).json()["deliveries"]]
    expect(shown).to_contain_text("Low balance")
    expect(shown).to_contain_text("answered 200")
    assert fits_the_width(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"webhooks-{device}.png", full_page=True)

    # Deleting asks first, then the webhook and its deliveries are gone.
    row.get_by_role("button", name="Delete").click()
    expect(row).to_contain_text("Alerts stop going there")
    row.get_by_role("button", name="Yes, delete").click()
    expect(page.get_by_role("alert")).to_contain_text(f"Deleted the webhook to {receiver.url}/hook")
    expect(page.get_by_text("No webhooks yet.")).to_be_visible()
    expect(page.locator("tr[data-delivery]")).to_have_count(0)
    assert client.get("/webhooks").json()["webhooks"] == []
    assert errors == []


@pytest.mark.parametrize("url, says", [("http://93.184.216.34/hook", "must be an https:// URL"),
                                       ("https://10.1.2.3/hook", "private or reserved address (10.1.2.3)")])
def test_a_refused_url_shows_the_reason_beside_the_field_and_adds_nothing(strict_server, context, device, account,
                                                                          url, says):
    from playwright.sync_api import expect
    email, client, _ = account(strict_server)
    page = signed_in_page(context, strict_server, email, "webhooks")
    page.get_by_label("URL").fill(url)
    page.get_by_role("button", name="Add webhook").click()
    error = page.locator("[data-field='url'] .field-error")
    expect(error).to_contain_text(says)
    expect(page.get_by_label("URL")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("[data-secret]")).to_have_count(0)
    expect(page.get_by_text("No webhooks yet.")).to_be_visible()
    assert client.get("/webhooks").json()["webhooks"] == []
    assert fits_the_width(page)
    page.screenshot(path=SHOTS / f"webhooks-refused-{device}.png", full_page=True)


def test_the_navigation_leads_to_webhooks_and_preferences_points_there(server, context, account):
    from playwright.sync_api import expect
    email, client, _ = account(server)
    page = signed_in_page(context, server, email, "preferences")
    expect(page.get_by_text("which you add on the Webhooks page")).to_be_visible()
    page.get_by_role("navigation").get_by_role("link", name="Webhooks", exact=True).click()
    settled(page)
    expect(page.get_by_role("heading", level=1)).to_have_text("Webhooks")
    expect(page.get_by_role("navigation").get_by_role("link", name="Webhooks")).to_have_attribute(
        "aria-current", "page")
