"""The web console in a real browser: one journey through every page, each
step checked against what the API says, then every page's screenshot at two
widths. The service runs under gunicorn; `local/echo` answers offline."""
import re
from decimal import Decimal

import httpx
import pytest

from tests.browser import SHOTS, PageErrors, launch, screenshot, settled
from tests.conftest import clean_database
from tests.support import PASSWORD, bearer, live_service

PROVIDER_KEY = "sk-console-test-0000000000009876"


@pytest.fixture(scope="module")
def server(pg_server, template_db):
    with clean_database(pg_server, template_db) as database, live_service(database) as live:
        yield live


@pytest.fixture(scope="module")
def browser():
    playwright, browser = launch()
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.errors = PageErrors()
    page.errors.watch(page)
    yield page
    context.close()


def api(server, email):
    """An httpx client signed in as the same user, to compare the page with the API."""
    login = httpx.post(f"{server.url}/api/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
    return httpx.Client(base_url=f"{server.url}/api/v1", headers=bearer(login["access_token"]))


def go(page, name):
    page.get_by_role("navigation").get_by_role("link", name=name, exact=True).click()
    settled(page)


def shown_amount(page, part):
    return page.locator(f".figure-{part} dd").get_attribute("data-amount")


def test_a_user_goes_through_the_whole_console(server, page):
    from playwright.sync_api import expect
    url = f"{server.url}/console"
    email = "grace@example.com"

    # Register (which signs in), sign out, sign in again.
    page.goto(f"{server.url}/")
    expect(page).to_have_url(re.compile(r"/console/signin"))
    page.get_by_role("link", name="Create an account").click()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Username").fill("grace")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(f"{url}/overview")
    expect(page.get_by_text("No spend in the last 30 days.")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("alert")).to_contain_text("You have signed out.")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{url}/overview")
    client = api(server, email)

    # Top up: the amount is checked as the API checks it; the balance and ledger are the API's.
    go(page, "Top up")
    page.get_by_label("Amount in USD").fill("5000")
    page.get_by_role("button", name="Add funds").click()
    expect(page.locator("[data-field=amount] .field-error")).to_contain_text("at most $1,000.00")
    page.get_by_label("Amount in USD").fill("25.5")
    page.get_by_role("button", name="Add funds").click()
    expect(page.get_by_role("alert")).to_contain_text("Added $25.50.")
    balance = client.get("/balance").json()
    expect(page.locator(".figure-available_balance dd")).to_have_text("$25.50")
    assert shown_amount(page, "available_balance") == balance["available_balance"]
    assert shown_amount(page, "total_balance") == balance["total_balance"]
    [deposit] = client.get("/balance/transactions").json()["transactions"]
    row = page.locator(f"tr[data-transaction='{deposit['id']}']")
    expect(row).to_contain_text("deposit")
    expect(row).to_contain_text("$25.50")

    # A provider key: only its last four are ever shown.
    go(page, "Provider keys")
    page.get_by_label("Provider").select_option("openai")
    page.get_by_label("API key").fill(PROVIDER_KEY)
    page.get_by_role("button", name="Add key").click()
    [stored] = client.get("/keys").json()["keys"]
    expect(page.locator(f"tr[data-key='{stored['id']}']")).to_contain_text("••••9876")
    expect(page.locator("tr[data-provider=openai]")).to_contain_text("Your key (BYOK)")
    assert PROVIDER_KEY not in page.content()

    # An access key: its secret once, with a copy button, then only in the list by its last four.
    go(page, "Access keys")
    page.get_by_label("Name", exact=True).fill("scripts")
    page.get_by_label("local/echo", exact=True).check()
    page.get_by_label("Spend limit in USD (optional)").fill("5")
    page.get_by_label("Limit period").select_option("month")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator(".secret-value").inner_text()
    expect(page.get_by_role("button", name="Copy")).to_be_visible()
    [listed] = client.get("/access-keys").json()["access_keys"]
    assert secret.endswith(listed["last4"])
    key_row = page.locator(f"tr[data-access-key='{listed['id']}']")
    expect(key_row).to_contain_text(f"••••{listed['last4']}")
    expect(key_row).to_contain_text("$5.00 per month")
    page.reload()
    settled(page)
    expect(page.locator(".secret-value")).to_have_count(0)

    # Models: the table in the API's order for the chosen sort; a model's page; a rating.
    go(page, "Models")
    page.get_by_label("Sort by").select_option("price")
    expect(page).to_have_url(re.compile(r"sort=price"))
    cheapest_first = [model["id"] for model in client.get("/models", params={"sort": "price"}).json()["models"]]
    expect(page.locator("tr[data-model]").first).to_have_attribute("data-model", cheapest_first[0])
    assert page.locator("tr[data-model]").evaluate_all("rows => rows.map(r => r.dataset.model)") == cheapest_first
    page.go_back()
    expect(page).to_have_url(f"{url}/models")
    page.get_by_role("link", name="local/echo", exact=True).click()
    expect(page).to_have_url(f"{url}/models/local/echo")
    page.get_by_label("★★★★ 4").check()
    page.get_by_role("button", name="Save rating").click()
    expect(page.get_by_role("alert")).to_contain_text("Saved: 4 stars.")
    assert client.get("/models/local/echo").json()["rating"]["count"] == 1

    # A recommendation, ranked as the API ranks it.
    go(page, "Recommend")
    page.get_by_label("What is the task?").fill("quick cheap answers for tests")
    page.get_by_label(re.compile("Budget")).fill("1")
    page.get_by_role("button", name="Recommend").click()
    ranked = client.post("/models/recommend", json={"task": "quick cheap answers for tests",
                                                    "max_price_per_mtok": "1", "capabilities": []}).json()
    shown = page.locator("ol.recommendations > li")
    expect(shown.first).to_have_attribute("data-model", ranked["recommendations"][0]["model"]["id"])

    # A chat with local/echo: the answer streams in, with its cost as the session's history has it.
    go(page, "Chat")
    page.get_by_label("Model").select_option("local/echo")
    page.get_by_label("Title (optional)").fill("First chat")
    page.get_by_role("button", name="Start chat").click()
    expect(page).to_have_url(re.compile(r"/console/chat/[0-9a-f-]{36}$"))
    session_id = page.url.rsplit("/", 1)[1]
    page.get_by_label("Message").fill("hello there world")
    with page.expect_response(re.compile(r"/messages$")) as sent:
        page.get_by_role("button", name="Send").click()
    assert sent.value.headers["content-type"].startswith("text/event-stream")
    answer = page.locator("li[data-role=assistant]")
    expect(answer.locator(".meta")).to_contain_text("cost")
    history = client.get(f"/chat/sessions/{session_id}").json()
    expect(answer.locator(".content")).to_have_text(history["messages"][-1]["content"])
    assert Decimal(answer.get_attribute("data-cost")) == Decimal(history["total_cost"])
    assert shown_amount(page, "available_balance") == client.get("/balance").json()["available_balance"]

    # A failing call shows its message in words that say what to do.
    page.get_by_role("link", name="← All chats").click()
    page.get_by_label("Model").select_option("anthropic/claude-3-5-haiku-20241022")
    page.get_by_role("button", name="Start chat").click()
    page.get_by_label("Message").fill("anyone there?")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("alert")).to_contain_text("Add one on Provider keys")

    # The chart on Overview: a bar for local/echo, with an accessible title.
    go(page, "Overview")
    chart = page.locator("svg.chart")
    expect(chart.locator("rect.bar[data-model='local/echo']").first).to_be_visible()
    expect(chart.locator("title").first).to_contain_text("Spend per day")

    # Preferences: the API's validation message beside its field, then a good value saved.
    go(page, "Preferences")
    page.get_by_label("Daily spend limit in USD").fill("lots")
    page.get_by_role("button", name="Save preferences").click()
    expect(page.locator("[data-field=daily_spend_limit] .field-error")).to_contain_text("decimal")
    page.get_by_label("Daily spend limit in USD").fill("3.5")
    page.get_by_label("Theme").select_option("dark")
    page.get_by_role("button", name="Save preferences").click()
    expect(page.get_by_role("alert")).to_contain_text("Preferences saved.")
    assert Decimal(client.get("/preferences").json()["daily_spend_limit"]) == Decimal("3.5")
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")

    # A deep link reloads into its page; a page that cannot load says so, with the navigation kept.
    page.goto(f"{url}/models/local/echo")
    expect(page.get_by_role("heading", level=1)).to_have_text("Local Echo")
    page.goto(f"{url}/models/local/no-such-model")
    expect(page.get_by_role("heading", level=1)).to_have_text("This page could not be shown")
    expect(page.locator("#alert")).not_to_be_empty()
    expect(page.get_by_role("navigation")).to_be_visible()

    # Every page at both widths, signed in.
    for name, path in [("overview", "overview"), ("topup", "topup"), ("keys", "keys"), ("access-keys", "access-keys"),
                       ("models", "models"), ("model", "models/local/echo"), ("recommend", "recommend"),
                       ("chat", "chat"), ("conversation", f"chat/{session_id}"), ("preferences", "preferences"),
                       ("not-found", "no-such-page")]:
        screenshot(page, f"{url}/{path}", name)

    # Sign out: the tokens are ended, and a protected page leads to sign-in.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{url}/signin")
    assert client.get("/balance").status_code == 401
    page.goto(f"{url}/topup")
    expect(page).to_have_url(re.compile(r"/console/signin\?next="))
    expect(page.get_by_role("alert")).to_contain_text("Sign in to see that page.")
    screenshot(page, f"{url}/signin", "signin")
    screenshot(page, f"{url}/register", "register")
    print(f"\nconsole screenshots in {SHOTS}")

    assert page.errors == []
