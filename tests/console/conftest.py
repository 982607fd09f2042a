"""What the console's browser tests share: Debian's chromium, one per module,
and a page at 1280 px whose script errors the test can check."""
import pytest

from tests.browser import PageErrors, launch


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
