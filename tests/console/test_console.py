"""The web console in a real browser: one journey through every page, each
step checked against what the API says, then every page's screenshot at two
widths. The service runs under gunicorn; `local/echo` answers offline."""
import re
from decimal import Decimal

import httpx
import pytest

from tests.browser import SHOTS, screenshot, settled
from tests.conftest import clean_database
from tests.support import PASSWORD, bearer, live_service

PROVIDER_KEY = "sk-console-test-0000000000009876"


@pytest.fixture(scope="module")
def server(pg_server, template_db):
    with clean_database(pg_server, template_db) as database, live_service(database) as live:
        yield live


@pytest.fixture
def api_as(server):
    """Signs in through the API as a user the page registered, to compare the page with the API."""
    clients = []

    def signed_in(email):
        login = httpx.post(f"{server.url}/api/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
        clients.append(httpx.Client(base_url=f"{server.url}/api/v1", headers=bearer(login["access_token"])))
        return clients[-1]
    yield signed_in
    for client in clients:
        client.close()


def go(page, name):
    page.get_by_role("navigation").get_by_role("link", name=name, exact=True).click()
    settled(page)


def shown_amount(page, part):
    return page.locator(f".figure-{part} dd").get_attribute("data-amount")


def test_a_user_goes_through_the_whole_console(server, page, api_as, record_property):
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
    page.get_by_label("Email").focus()  # by keyboard alone
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{url}/overview")
    client = api_as(email)

    # Top up: the amount is checked as the API checks it; the balance and ledger are the API's.
    go(page, "Top up")
    page.get_by_label("Amount in USD").fill("5000")
    page.get_by_role("button", name="Add funds").click()
    expect(page.locator("[data-field=amount] .field-error")).to_contain_text("at most $1,000.00")
    page.get_by_label("Amount in USD").fill("25.5")
    page.get_by_role("button", name="Add funds").dblclick()  # charged once
    expect(page.get_by_role("alert")).to_contain_text("Added $25.50.")
    balance = client.get("/balance").json()
    expect(page.locator(".figure-available_balance dd")).to_have_text("$25.50")
    assert shown_amount(page, "available_balance") == balance["available_balance"]
    assert shown_amount(page, "total_balance") == balance["total_balance"]
    [deposit] = client.get("/balance/transactions").json()["transactions"]
    row = page.locator(f"tr[data-transaction='{deposit['id']}']")
    expect(row).to_contain_text("deposit")
    expect(row).to_contain_text("$25.50")
    page.get_by_label("Type").select_option("hold")
    expect(page.get_by_text("No transactions of this type yet.")).to_be_visible()

    # A provider key: only its last four are ever shown.
    go(page, "Provider keys")
    page.get_by_label("Provider").select_option("openai")
    page.get_by_label("API key").fill(PROVIDER_KEY)
    page.get_by_role("button", name="Add key").click()
    expect(page.get_by_role("alert")).to_contain_text("Added the openai key ending 9876.")
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
    expect(page.locator("[data-secret]")).to_contain_text("never shown again")
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
    expect(page.locator("tr[data-deployment='local/echo'] td").nth(1)).to_have_text("closed")
    page.get_by_label("★★★★ 4").check()
    page.get_by_role("button", name="Save rating").click()
    expect(page.get_by_role("alert")).to_contain_text("Saved: 4 stars.")
    assert client.get("/models/local/echo").json()["rating"]["count"] == 1

    # A recommendation, ranked as the API ranks it.
    go(page, "Recommend")
    page.get_by_label("What is the task?").fill("quick cheap answers for tests")
    page.get_by_label(re.compile("Budget")).fill("1")
    page.get_by_role("button", name="Recommend").click()
    expect(page.locator("ol.recommendations")).to_be_visible()
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
    expect(answer.locator(".meta")).to_contain_text("answer tokens")
    history = client.get(f"/chat/sessions/{session_id}").json()
    expect(answer.locator(".content")).to_have_text(history["messages"][-1]["content"])
    assert Decimal(answer.get_attribute("data-cost")) == Decimal(history["messages"][-1]["cost"])
    assert shown_amount(page, "available_balance") == client.get("/balance").json()["available_balance"]

    # A chat with a model needing a key is not started: the page says what to do instead.
    page.get_by_role("link", name="← All chats").click()
    page.get_by_label("Model").select_option("anthropic/claude-3-5-haiku-20241022")
    page.get_by_role("button", name="Start chat").click()
    expect(page.get_by_role("alert")).to_contain_text("Anthropic models need an API key")
    expect(page.get_by_role("alert").get_by_role("link", name="Provider keys")).to_be_visible()
    expect(page).to_have_url(f"{url}/chat")
    # A second chat, deleted.
    page.get_by_label("Model").select_option("local/echo")
    page.get_by_role("button", name="Start chat").click()
    expect(page).to_have_url(re.compile(r"/console/chat/[0-9a-f-]{36}$"))
    second_chat = page.url.rsplit("/", 1)[1]
    page.get_by_role("link", name="← All chats").click()
    chat_row = page.locator(f"tr[data-session='{second_chat}']")
    chat_row.get_by_role("button", name="Delete").click()
    chat_row.get_by_role("button", name="Yes, delete").click()
    expect(page.get_by_role("alert")).to_contain_text("Chat deleted.")
    expect(chat_row).to_have_count(0)
    assert [chat["id"] for chat in client.get("/chat/sessions").json()["sessions"]] == [session_id]

    # The chart on Overview: a bar for local/echo, with an accessible title.
    go(page, "Overview")
    chart = page.locator("svg.chart")
    expect(chart.locator("rect.bar[data-model='local/echo']").first).to_be_visible()
    expect(chart.locator("title").first).to_contain_text("Spend per day")
    # Recent activity: a settled call shows its charge by part.
    expect(page.locator(".charge-parts").first).to_contain_text(" input $")
    expect(page.locator(".charge-parts").first).to_contain_text(" output $")
    expect(page.locator(".charge-parts").first).to_contain_text(", at price version ")

    # Preferences: the API's validation message beside its field, then a good value saved.
    go(page, "Preferences")
    page.get_by_label("Daily spend limit in USD").fill("lots")
    page.get_by_role("button", name="Save preferences").click()
    expect(page.locator("[data-field=daily_spend_limit] .field-error")).to_contain_text("decimal")
    page.get_by_label("Daily spend limit in USD").fill("3.5")
    page.get_by_label("Theme").select_option("dark")
    page.get_by_label("When a provider you hold a key for fails").select_option("true")
    page.get_by_role("button", name="Save preferences").click()
    expect(page.get_by_role("alert")).to_contain_text("Preferences saved.")
    saved = client.get("/preferences").json()
    assert Decimal(saved["daily_spend_limit"]) == Decimal("3.5") and saved["house_key_fallback"] is True
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
    record_property("written_to", f"{SHOTS} (console screenshots)")

    assert page.errors == []


@pytest.fixture(scope="module")
def short_lived_tokens(pg_server, template_db):
    """A service whose access tokens last two seconds."""
    with clean_database(pg_server, template_db) as database, live_service(database, ACCESS_TOKEN_TTL=2) as live:
        yield live


def test_the_token_is_refreshed_in_time_and_a_revoked_session_leads_to_sign_in(short_lived_tokens, page):
    from playwright.sync_api import expect
    server = short_lived_tokens
    url = f"{server.url}/console"
    credentials = {"email": "lin@example.com", "password": PASSWORD}
    httpx.post(f"{server.url}/api/v1/auth/register", json=credentials | {"username": "lin"}).raise_for_status()
    refreshes = []
    page.on("request", lambda request: request.url.endswith("/auth/refresh") and refreshes.append(request))

    page.goto(f"{url}/signin")
    page.get_by_label("Email").fill(credentials["email"])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{url}/overview")
    page.wait_for_timeout(3000)  # past the first token's life
    assert refreshes, "the token was not refreshed before it expired"
    go(page, "Top up")
    expect(page.locator(".figure-available_balance dd")).to_have_text("$0.00")

    # Signing out elsewhere ends this session too: the next request leads to sign-in, saying why.
    login = httpx.post(f"{server.url}/api/v1/auth/login", json=credentials).json()
    httpx.post(f"{server.url}/api/v1/auth/logout", headers=bearer(login["access_token"])).raise_for_status()
    page.get_by_role("navigation").get_by_role("link", name="Overview").click()
    expect(page).to_have_url(f"{url}/signin")
    expect(page.get_by_role("alert")).to_contain_text("Your session has ended. Sign in again.")
    assert page.errors == []


def test_tabs_reopened_at_once_all_keep_the_session(server, browser):
    """Each tab restores its session from the one refresh cookie; refreshing it
    twice at once would spend it twice, which ends every session."""
    from playwright.sync_api import expect
    credentials = {"email": "tabs@example.com", "password": PASSWORD}
    httpx.post(f"{server.url}/api/v1/auth/register", json=credentials | {"username": "tabs"}).raise_for_status()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        first = context.new_page()
        first.goto(f"{server.url}/console/signin")
        first.get_by_label("Email").fill(credentials["email"])
        first.get_by_label("Password").fill(PASSWORD)
        first.get_by_role("button", name="Sign in").click()
        expect(first).to_have_url(f"{server.url}/console/overview")
        tabs = [first, *(context.new_page() for _ in range(3))]
        for tab in tabs:  # all four restore at once, from the same cookie
            tab.goto(f"{server.url}/console/topup", wait_until="commit")
        for tab in tabs:
            expect(tab).to_have_url(f"{server.url}/console/topup")
            expect(tab.locator(".figure-available_balance dd")).to_have_text("$0.00")
    finally:
        context.close()


def test_the_api_docs_render_every_operation_under_their_policy(server, page):
    """/docs (Swagger UI, served locally) draws every operation of /openapi.json
    while its Content-Security-Policy lets no inline script run but its own."""
    page.add_init_script("window.violations = [];"
                         "document.addEventListener('securitypolicyviolation',"
                         " event => window.violations.push(event.violatedDirective + ' ' + event.blockedURI));")
    offsite = []
    page.on("request", lambda request: request.url.startswith(server.url) or offsite.append(request.url))
    document = httpx.get(f"{server.url}/openapi.json").json()
    operations = sum(len(methods) for methods in document["paths"].values())
    page.goto(f"{server.url}/docs")
    page.wait_for_function(f"() => document.querySelectorAll('.opblock').length === {operations}")
    page.locator(".opblock-summary").first.click()  # an operation opens
    page.locator(".opblock-body").first.wait_for()
    assert page.evaluate("window.violations") == []
    assert offsite == []
    assert page.errors == []
    # The policy is in force: an inline script the page did not ship is refused.
    assert page.evaluate("""() => {
        const script = document.createElement('script');
        script.textContent = 'window.injected = true';
        document.body.append(script);
        return window.injected === true;
    }""") is False
