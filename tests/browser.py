"""A real browser for the console's tests: Debian's chromium driven by
Playwright, never a downloaded browser. Skips, saying why, when either is
missing. Collects what the page logs as errors, and writes screenshots."""
import re
from pathlib import Path

import pytest

from tests.support import ROOT

CHROMIUM = Path("/usr/bin/chromium")
# Test artefacts live apart from .data/ (the service's data, which README says to back up).
SHOTS = ROOT / ".test-artifacts" / "console-shots"
WIDTHS = (1280, 390)
# Chromium logs every 4xx answer as "Failed to load resource"; the console
# expects some (no session cookie yet, a refused call it then explains), and
# the tests check what the page shows for them instead.
EXPECTED_REFUSAL = re.compile(r"^Failed to load resource: the server responded with a status of 4\d\d")


def launch():
    """(playwright, browser), or a skip with the reason."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -r requirements-test.txt")
    if not CHROMIUM.exists():
        pytest.skip(f"chromium not found at {CHROMIUM}: apt-get install chromium")
    playwright = sync_playwright().start()
    return playwright, playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)


class PageErrors(list):
    """Console errors and uncaught exceptions of one page, other than expected refusals."""

    def watch(self, page):
        page.on("console", lambda message: message.type == "error" and not EXPECTED_REFUSAL.match(message.text)
                and self.append(f"console: {message.text}"))
        page.on("pageerror", lambda error: self.append(f"page error: {error}"))


def settled(page):
    """Waits until the page and its panels have stopped loading."""
    page.wait_for_function("() => !document.querySelector('.loading') && document.querySelector('main h1')")


def screenshot(page, url, name):
    """The page at `url`, reloaded at each width, saved as <name>-<width>.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 800})
        page.goto(url)
        settled(page)
        page.screenshot(path=SHOTS / f"{name}-{width}.png", full_page=True)
    page.set_viewport_size({"width": WIDTHS[0], "height": 800})
