"""The console as a newcomer meets it, in Debian's chromium at a desktop's
1280 px and a phone's 390 px: the chat's figures agree with the API live and
after a reload; the activity is one signed row per call; what needs a key says
so before anything is made; nothing wraps one word per line or into the next
column; and a signed-out visit asks nothing it would be refused."""
import re
import zlib
from decimal import Decimal

import httpx
import pytest

from tests.browser import SHOTS, settled
from tests.conftest import clean_database
from tests.support import PASSWORD, bearer, live_service, readme_ledger_query

DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}
DEVICES = {"1280": DESKTOP, "390": PHONE}
HAIKU = "anthropic/claude-3-5-haiku-20241022"


@pytest.fixture(scope="module")
def database(pg_server, template_db):
    with clean_database(pg_server, template_db) as database:
        yield database


@pytest.fixture(scope="module")
def server(database):
    with live_service(database) as live:
        yield live


@pytest.fixture(params=list(DEVICES))
def device(request):
    return request.param


@pytest.fixture
def context(browser, device):
    context = browser.new_context(**DEVICES[device])
    context.set_default_timeout(10_000)
    yield context
    context.close()


@pytest.fixture
def account(server, device, request):
    """A user of their own with $10, signed in through the API: (email, client)."""
    tag = zlib.crc32(request.node.name.encode())  # one user per test and width
    email, username = f"sam-{tag}@example.com", f"sam_{tag}"
    httpx.post(f"{server.url}/api/v1/auth/register",
               json={"email": email, "username": username, "password": PASSWORD}).raise_for_status()
    login = httpx.post(f"{server.url}/api/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
    with httpx.Client(base_url=f"{server.url}/api/v1", headers=bearer(login["access_token"])) as client:
        assert client.post("/balance/funds", json={"amount": "10"}).status_code == 201
        yield email, client


def signed_in_page(context, server, email, path):
    page = context.new_page()
    page.goto(f"{server.url}/console/signin")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}/console/overview")
    page.goto(f"{server.url}/console/{path}")
    settled(page)
    return page


def header_and_bubbles(page):
    """What the chat page shows: (messages, total cost) of its header, and each bubble's (role, tokens, cost)."""
    header = page.locator(".conversation-total")
    bubbles = page.locator("li[data-role]").evaluate_all(
        "items => items.map(item => [item.dataset.role, Number(item.dataset.tokens), item.dataset.cost])")
    return ((int(header.get_attribute("data-messages")), Decimal(header.get_attribute("data-cost"))),
            [(role, tokens, Decimal(cost)) for role, tokens, cost in bubbles])


def api_figures(client, session_id):
    session = client.get(f"/chat/sessions/{session_id}").json()
    return ((session["message_count"], Decimal(session["total_cost"])),
            [(message["role"], message["prompt_tokens"] if message["role"] == "user" else message["completion_tokens"],
              Decimal(message["cost"])) for message in session["messages"]])


def test_the_chat_shows_each_bubbles_own_figures_and_the_total_live_and_after_a_reload(server, context, account,
                                                                                      device):
    from playwright.sync_api import expect
    email, client = account
    session_id = client.post("/chat/sessions", json={"model_id": "local/echo", "title": "Figures"}).json()["id"]
    page = signed_in_page(context, server, email, f"chat/{session_id}")
    expect(page.locator(".conversation-total")).to_contain_text("0 messages")
    for turn, text in enumerate(["hello there", "a somewhat longer second message"], start=1):
        page.get_by_label("Message").fill(text)
        page.get_by_role("button", name="Send").click()
        expect(page.locator(".conversation-total")).to_have_attribute("data-messages", str(2 * turn))
        answer = page.locator("li[data-role=assistant]").nth(turn - 1)
        expect(answer).to_have_attribute("data-tokens", re.compile(r"\d"))
        live = header_and_bubbles(page)
        assert live == api_figures(client, session_id)
        # Each bubble's words are its own figures: a prompt's tokens, or an answer's.
        assert page.locator("li[data-role=user] .meta").last.inner_text().startswith(f"{live[1][-2][1]} prompt tokens")
        assert page.locator("li[data-role=assistant] .meta").last.inner_text().startswith(
            f"{live[1][-1][1]} answer tokens")
    live_text = page.locator(".conversation-total").inner_text()
    page.reload()
    settled(page)
    assert header_and_bubbles(page) == live and page.locator(".conversation-total").inner_text() == live_text
    # The total is the bubbles' costs added up; the header reads it in words.
    (count, total), bubbles = live
    assert total == sum(cost for _, _, cost in bubbles) and count == len(bubbles) == 4
    expect(page.locator(".conversation-total")).to_contain_text("4 messages")
    # A keyboard's hint only where a keyboard is likely.
    assert (page.get_by_text("Ctrl+Enter sends.").count() == 1) == (device == "1280")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"chat-figures-{device}.png", full_page=True)


def test_the_activity_is_one_signed_row_per_call(server, database, context, account):
    from playwright.sync_api import expect
    email, client = account
    session_id = client.post("/chat/sessions", json={"model_id": "local/echo"}).json()["id"]
    for text in ("one", "two"):
        assert client.post(f"/chat/sessions/{session_id}/messages", json={"content": text}).status_code == 201
    user_id = client.get("/auth/me").json()["id"]
    # A call still running: its hold, made as the service makes it.
    [(hold_id,)] = database.query("SELECT transaction_id FROM deduct_user_balance(%s, 0.01, 'Hold for a call', "
                                  "'{}', NULL, 600, 'local/echo', NULL)", (user_id,))
    page = signed_in_page(context, server, email, "overview")
    rows = page.locator("tr[data-activity]")
    expect(rows).to_have_count(4)
    api_rows = client.get("/activity").json()["activity"]
    assert rows.evaluate_all("rows => rows.map(row => row.dataset.activity)") == [row["id"] for row in api_rows]
    running, *calls, deposit = api_rows
    expect(page.locator(f"tr[data-activity='{running['id']}']")).to_contain_text(
        "$0.01 reserved for a call in progress")
    for row in calls:
        shown = page.locator(f"tr[data-activity='{row['id']}']")
        expect(shown).to_contain_text("Call to local/echo")
        expect(shown).to_contain_text(f"{row['prompt_tokens']} prompt + {row['completion_tokens']} answer tokens")
        amount = shown.locator("td.number .money")
        assert amount.inner_text().startswith("−$") and amount.get_attribute("title") == "−$" + row["amount"][1:]
    assert page.locator(f"tr[data-activity='{deposit['id']}'] td.number").inner_text() == "+$10.00"
    table_text = page.locator("tr[data-activity]").all_inner_texts()
    assert not any(re.search(r"\b(hold|release)\b", text) for text in table_text)

    # Settled, the reservation is gone; the ledger page keeps every entry.
    database.query("SELECT ok FROM add_user_funds(%s, 0.01, 'release', %s, 'Unused part', '{}')", (user_id, hold_id))
    page.reload()
    settled(page)
    expect(page.get_by_text("reserved for a call in progress")).to_have_count(0)
    page.goto(f"{server.url}/console/topup")
    settled(page)
    expect(page.locator("tr[data-transaction]")).to_have_count(7)  # a deposit, and three holds and releases
    assert database.query(readme_ledger_query()) == []


def test_what_needs_a_key_is_marked_and_no_chat_is_made_for_it(server, context, account):
    from playwright.sync_api import expect
    email, client = account
    access = {item["model_id"]: item for item in client.get("/models/access").json()["access"]}
    page = signed_in_page(context, server, email, "models")
    for model_id, item in access.items():
        mark = page.locator(f"tr[data-model='{model_id}'] [data-access]")
        expect(mark).to_have_attribute("data-access", item["via"])
        expect(mark).to_have_text("Needs a key" if not item["callable"] else re.compile(r"^Ready"))
    assert access[HAIKU]["via"] == "needs_key" and access["local/echo"]["callable"]

    page.goto(f"{server.url}/console/recommend")
    settled(page)
    page.get_by_label("What is the task?").fill("Fix a bug in my Python function")
    page.get_by_role("button", name="Recommend").click()
    shown = page.locator("ol.recommendations > li")
    expect(shown.first).to_be_visible()
    ranked = client.post("/models/recommend", json={"task": "Fix a bug in my Python function"}).json()
    assert shown.evaluate_all("items => items.map(item => item.dataset.model)") == [
        item["model"]["id"] for item in ranked["recommendations"]]
    marks = shown.locator("[data-access]").evaluate_all("marks => marks.map(mark => mark.dataset.access)")
    assert marks[0] != "needs_key" and marks == sorted(marks, key=lambda via: via == "needs_key")
    # Asked otherwise, the order is the fit's alone, as the API ranks it.
    page.get_by_label("Models I can call now first").uncheck()
    page.get_by_role("button", name="Recommend").click()
    by_fit = client.post("/models/recommend", json={"task": "Fix a bug in my Python function",
                                                    "callable_first": False}).json()
    page.wait_for_function("ids => JSON.stringify([...document.querySelectorAll('ol.recommendations > li')]"
                           ".map(item => item.dataset.model)) === JSON.stringify(ids)",
                           arg=[item["model"]["id"] for item in by_fit["recommendations"]])

    page.goto(f"{server.url}/console/chat")
    settled(page)
    expect(page.locator(f"option[value='{HAIKU}']")).to_contain_text("Needs a key")
    expect(page.locator("option[value='local/echo']")).to_contain_text("Ready")
    page.get_by_label("Model").select_option(HAIKU)
    advice = page.locator("[data-needs-key]")
    expect(advice).to_contain_text("Anthropic models need an API key")
    expect(advice.get_by_role("link", name="Provider keys")).to_have_attribute("href", "/console/keys")
    page.get_by_role("button", name="Start chat").click()
    expect(page.get_by_role("alert")).to_contain_text("Add yours on Provider keys")
    expect(page).to_have_url(f"{server.url}/console/chat")
    assert client.get("/chat/sessions").json()["sessions"] == []


NARROW_PAGES = ["overview", "models", "topup", "chat", "models/local/echo", "keys", "access-keys"]


def test_nothing_wraps_one_word_per_line_or_into_the_next_column(server, context, account, device):
    email, client = account
    session_id = client.post("/chat/sessions", json={"model_id": "local/echo"}).json()["id"]
    assert client.post(f"/chat/sessions/{session_id}/messages", json={"content": "hi"}).status_code == 201
    page = signed_in_page(context, server, email, "overview")
    for path in NARROW_PAGES:
        page.goto(f"{server.url}/console/{path}")
        settled(page)
        page.wait_for_function("() => !document.querySelector('.loading')")
        # Each caption's height against its line height: one line, or two for a long one.
        captions = page.locator("caption, .chart-max, .chart-axis, .legend li").evaluate_all("""els => els.map(el => {
            const style = getComputedStyle(el);
            return [el.textContent, el.getBoundingClientRect().height / parseFloat(style.lineHeight),
                    parseFloat(style.fontSize)];
        })""")
        for text, lines, font_size in captions:
            assert lines < 2.5, f"{path} at {device}: {text!r} takes {lines:.1f} lines"
            assert font_size >= 12, f"{path} at {device}: {text!r} is {font_size}px"
        assert page.locator("svg.chart text").count() == 0  # a drawing's words would shrink with it
        # A card's value stays right of its label: no part of a cell spills under the label.
        spills = page.locator("td[data-label]").evaluate_all("""cells => cells.flatMap(cell => {
            const style = getComputedStyle(cell);
            const label = getComputedStyle(cell, '::before');
            if (label.position !== 'absolute') return [];
            const left = cell.getBoundingClientRect().left + parseFloat(style.paddingLeft) - 1;
            const range = document.createRange();
            range.selectNodeContents(cell);
            return [...range.getClientRects()].filter(rect => rect.width && rect.left < left)
                .map(() => cell.dataset.label + ': ' + cell.textContent);
        })""")
        assert spills == [], f"{path} at {device}"
        if device == "390":
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, f"{path} scrolls sideways"


def test_a_signed_out_visit_lands_on_sign_in_quietly(server, context):
    from playwright.sync_api import expect
    page = context.new_page()
    refused, errors = [], []
    page.on("response", lambda response: response.status >= 400 and refused.append(
        f"{response.status} {response.url}"))
    page.on("requestfailed", lambda request: refused.append(f"failed {request.url}"))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.goto(f"{server.url}/")
    expect(page).to_have_url(f"{server.url}/console/signin")
    expect(page.get_by_label("Email")).to_be_visible()
    expect(page.locator("#alert")).to_be_hidden()
    expect(page.get_by_role("alert")).to_have_count(0)  # neither the page's alert nor the form's shows
    page.goto(f"{server.url}/console/overview")  # a deep link says why it leads to sign-in
    expect(page).to_have_url(re.compile(r"/console/signin\?next="))
    expect(page.get_by_role("alert")).to_contain_text("Sign in to see that page.")
    for path in ("register", "signin", "models"):
        page.goto(f"{server.url}/console/{path}")
        expect(page.get_by_role("heading", level=1)).to_be_visible()
    assert refused == [] and errors == []
