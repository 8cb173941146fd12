"""What the dashboard's browser tests share: headless Debian Chromium through Playwright, and a page that
records console errors, page errors, failed requests and requests to other hosts.

A test module imports ``browser``, ``watched`` and ``Watched`` from here and defines its own ``server``
fixture (the base URL of a live ``elfscreen serve``), which ``watched`` uses.
"""
from __future__ import annotations

from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="the dashboard tests need the playwright package "
                               "(pip install playwright; the browser is Debian's chromium)")
CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("the dashboard tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
                allow_module_level=True)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


class Watched:
    """A page whose console errors, page errors, failed requests and requests to other hosts are recorded."""

    def __init__(self, browser, base: str):
        self.page = browser.new_page(viewport={"width": 1360, "height": 1000})
        self.problems: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.base = base

    def check(self) -> None:
        assert not self.problems, self.problems
        foreign = [u for u in self.requests if not u.startswith((self.base, "data:", "blob:"))]
        assert not foreign, f"requests outside the app: {foreign}"

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / name), full_page=True)
        assert (ARTIFACTS / name).stat().st_size > 10_000


@pytest.fixture
def watched(browser, server):
    w = Watched(browser, server)
    yield w
    w.page.close()
