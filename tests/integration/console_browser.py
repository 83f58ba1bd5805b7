"""Browser-test pieces for the web console (/ui/): a real gateway with the demo model, and
pages of it in Debian's chromium driven by Playwright's sync API (Playwright's own browser
download cannot work here). Test modules import the fixtures they use:

    from console_browser import (  # noqa: F401  (each registers the fixture named without _fixture)
        browser_fixture, console_fixture, console_gateway_fixture, open_console_fixture,
    )

Every page records what the console must never do: load anything from another origin, raise
a Content-Security-Policy violation, or throw an uncaught error; ``ConsolePage.problems``
lists them and each page's teardown fails the test on any. With
``LLAMA_SUPERVISOR_SCREENSHOTS=1``, ``ConsolePage.screenshot(name)`` saves
docs/console/NAME.png (1280x800), overwriting; otherwise it does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from harness import MODEL_ID, RunningGateway

playwright_api = pytest.importorskip("playwright.sync_api")
playwright_api.expect.set_options(timeout=30_000)  # a model loads in seconds on 2 busy cores
Browser = playwright_api.Browser
ConsoleMessage = playwright_api.ConsoleMessage
Page = playwright_api.Page
Request = playwright_api.Request
Response = playwright_api.Response

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 800}
SCREENSHOTS = os.environ.get("LLAMA_SUPERVISOR_SCREENSHOTS") == "1"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "console"
MODEL_FILE = f"{MODEL_ID}.gguf"  # the demo model's id on /api/v2 (its file name)
OpenConsole = Callable[..., "ConsolePage"]


class ConsolePage:
    """One browser tab on a gateway's console, with what went wrong in it."""

    def __init__(self, page: Page, gateway: RunningGateway) -> None:
        self.page = page
        self.gateway = gateway
        self.origin = gateway.url
        self.problems: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))
        page.on("request", self._on_request)

    def _on_console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.problems.append(f"CSP: {message.text}")

    def _on_request(self, request: Request) -> None:
        url = urlsplit(request.url)
        if f"{url.scheme}://{url.netloc}" != self.origin:
            self.problems.append(f"another origin: {request.url}")

    def open(self, view: str = "models", key: str | None = None) -> Response | None:
        """The console at ``#view``; ``key`` is put in the tab's sessionStorage first, as the
        key dialog would."""
        if key is not None:
            self.page.add_init_script(  # once: a reload (forget key) must not bring it back
                "if (!sessionStorage.getItem('test.seeded')) {"
                f" sessionStorage.setItem('llama-supervisor.key', {key!r});"
                " sessionStorage.setItem('test.seeded', '1'); }"
            )
        return self.page.goto(f"{self.origin}/ui/#{view}")

    def screenshot(self, name: str) -> None:
        if SCREENSHOTS:
            DOCS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(DOCS / f"{name}.png"))


def admin_call(
    gateway: RunningGateway,
    method: str,
    path: str,
    key: str | None = None,
    json: object = None,
) -> httpx.Response:
    """A call to the gateway from outside the browser (setting a test's scene, or checking
    what the page did); ``json``: the body, if any."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.request(
        method, f"{gateway.url}{path}", headers=headers, json=json, timeout=120
    )
    response.raise_for_status()
    return response


def model_state(gateway: RunningGateway, key: str | None = None) -> dict[str, object]:
    """The demo model's lifecycle details (``state`` of GET /api/v2/models/{id})."""
    state: dict[str, object] = admin_call(
        gateway, "GET", f"/api/v2/models/{MODEL_FILE}", key
    ).json()["state"]
    return state


@pytest.fixture(scope="module", name="console_gateway")
def console_gateway_fixture(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    """An open gateway (no keys) with the demo model, one per test module."""
    log = tmp_path_factory.mktemp("console") / "gateway.log"
    running = RunningGateway(llama_server_bin, demo_model_dir, log)
    yield running
    running.stop()


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[Browser]:
    """Headless chromium, one per test module (starting one is the slow part)."""
    if not CHROMIUM.exists():
        reason = "no /usr/bin/chromium (make system-deps installs it)"
        if os.environ.get("LLAMA_SUPERVISOR_REQUIRE_INTEGRATION") == "1":  # make test, CI
            pytest.fail(reason)
        pytest.skip(reason)
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        yield launched
        launched.close()


@pytest.fixture(name="open_console")
def open_console_fixture(browser: Browser) -> Iterator[OpenConsole]:
    """``open_console(gateway)``: a fresh tab (its own context: no sessionStorage shared) on
    ``gateway``'s console at 1280x800; every tab opened is checked for problems, and closed."""
    opened: list[tuple[object, ConsolePage]] = []

    def make(gateway: RunningGateway) -> ConsolePage:
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(30_000)
        tab = ConsolePage(context.new_page(), gateway)
        opened.append((context, tab))
        return tab

    yield make
    problems = [problem for _, tab in opened for problem in tab.problems]
    for context, _ in opened:
        context.close()  # type: ignore[attr-defined]
    assert problems == []


@pytest.fixture(name="console")
def console_fixture(open_console: OpenConsole, console_gateway: RunningGateway) -> ConsolePage:
    """A tab on ``console_gateway``'s console (not yet navigated: call ``open``)."""
    return open_console(console_gateway)
