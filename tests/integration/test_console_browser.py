"""The web console in a real browser (Debian's chromium) on a real gateway with the demo model:
the models view shows the model's live state and its buttons load and unload it; the logs view
follows a child's output live; the playground streams a reply and its Stop button cancels the
request; a keyed gateway asks for a key and shows admin actions to admin keys only. Every tab
also checks (console_browser.ConsolePage) that nothing came from another origin and nothing
broke the Content-Security-Policy."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_browser import (  # noqa: F401  (fixtures)
    MODEL_FILE,
    ConsolePage,
    OpenConsole,
    admin_call,
    browser_fixture,
    console_fixture,
    console_gateway_fixture,
    model_state,
    open_console_fixture,
)
from harness import RunningGateway, wait_for
from playwright.sync_api import Locator, expect

pytestmark = pytest.mark.integration
INFERENCE = "console-inference-key"
ADMIN = "console-admin-key"


def model_card(tab: ConsolePage) -> Locator:
    return tab.page.locator(f'article.model[data-model="{MODEL_FILE}"]')


def test_models_view_shows_the_model_and_its_buttons_load_and_unload_it(
    console: ConsolePage, console_gateway: RunningGateway
) -> None:
    admin_call(console_gateway, "POST", f"/api/v2/models/{MODEL_FILE}/unload")
    answer = console.open("models")
    assert answer is not None
    assert answer.headers["content-security-policy"].startswith("default-src 'self'")
    card = model_card(console)
    expect(card.locator(".state")).to_have_text("unloaded")

    card.get_by_role("button", name="Load…").click()
    card.locator('input[name="n_ctx"]').fill("2048")
    card.locator("form.load-form").get_by_role("button", name="Load", exact=True).click()
    expect(card.locator(".state")).to_have_text("ready")
    state = model_state(console_gateway)
    assert state["params"] == {"n_ctx": 2048}
    expect(card.locator('dd[data-fact="PID"]')).to_have_text(str(state["pid"]))
    expect(card.locator(".child")).to_contain_text("threads")
    chat = {"model": MODEL_FILE, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    admin_call(console_gateway, "POST", "/v1/chat/completions", json=chat)
    expect(card.locator('dd[data-fact="Tokens/s"]')).to_have_text(re.compile(r"^\d+\.\d$"))
    console.screenshot("models")

    card.get_by_role("button", name="Unload").click()
    dialog = console.page.locator("#confirm-dialog")
    dialog.get_by_role("button", name="Cancel").click()  # asked first: cancelling keeps it
    assert model_state(console_gateway)["state"] == "ready"
    card.get_by_role("button", name="Unload").click()
    dialog.get_by_role("button", name="Unload").click()
    expect(card.locator(".state")).to_have_text("unloaded")
    assert model_state(console_gateway)["state"] == "unloaded"


def test_logs_view_follows_a_childs_output_live(
    console: ConsolePage, console_gateway: RunningGateway
) -> None:
    admin_call(console_gateway, "POST", f"/api/v2/models/{MODEL_FILE}/load")
    console.open("logs")
    lines = console.page.locator("#log-lines .log-line")
    expect(lines.first).to_be_visible()  # the tail: the page follows the stream now
    # A new child (a new pid) prints only after the page began following: its lines came live.
    admin_call(console_gateway, "POST", f"/api/v2/models/{MODEL_FILE}/unload")
    admin_call(console_gateway, "POST", f"/api/v2/models/{MODEL_FILE}/load")
    pid = model_state(console_gateway)["pid"]
    expect(console.page.locator(f'#log-lines .log-line[data-pid="{pid}"]').first).to_be_visible()
    console.screenshot("logs")

    levels = console.page.evaluate(
        """import("/ui/views/logs.js").then((logs) => [
            "0.01.002.003 W warning: something", "E error: failed", "I srv  listening",
            "unmarked output", "terminate called: fatal error"].map(logs.levelOf))"""
    )
    assert levels == ["warn", "error", "info", "info", "error"]
    console.page.locator("#logs-filter").select_option("problems")
    info = console.page.locator('#log-lines .log-line[data-level="info"]')
    expect(info.first).to_be_hidden()


def test_playground_streams_a_reply_and_stop_cancels_the_request(
    console: ConsolePage, console_gateway: RunningGateway
) -> None:
    page = console.page
    console.open("playground")
    expect(page.locator(f'#chat-model option[value="{MODEL_FILE}"]')).to_be_attached()
    page.locator("#chat-max-tokens").fill("32")
    page.locator("#chat-input").fill("Say hello in one short sentence.")
    page.locator("#chat-send").click()
    reply = page.locator(".message.assistant").last
    expect(reply).to_have_attribute("data-outcome", "done")
    assert reply.locator(".content").inner_text().strip()
    expect(page.locator("#chat-stats")).to_contain_text("tokens/s")
    console.screenshot("playground")

    page.get_by_role("button", name="Clear").click()  # a fresh conversation: a known reply
    page.locator("#chat-max-tokens").fill("2000")
    page.locator("#chat-temperature").fill("0")  # the same long count every time
    page.locator("#chat-input").fill("Count from 1 to 1000, one number per line.")
    page.locator("#chat-send").click()
    reply = page.locator(".message.assistant").last
    expect(reply.locator(".content")).not_to_be_empty()
    assert model_state(console_gateway)["in_flight"] == 1  # still streaming
    page.locator("#chat-stop").click()
    expect(reply).to_have_attribute("data-outcome", "stopped")
    expect(page.locator("#chat-send")).to_be_enabled()
    assert wait_for(lambda: model_state(console_gateway)["in_flight"] == 0, timeout=30)


@pytest.fixture(scope="module")
def keyed_gateway(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    log = tmp_path_factory.mktemp("keyed-console") / "gateway.log"
    env = {
        "LLAMA_SUPERVISOR_API_KEYS": json.dumps([INFERENCE]),
        "LLAMA_SUPERVISOR_ADMIN_KEYS": json.dumps([ADMIN]),
    }
    running = RunningGateway(llama_server_bin, demo_model_dir, log, env=env)
    yield running
    running.stop()


def enter_key(tab: ConsolePage, key: str) -> None:
    expect(tab.page.locator("#key-dialog")).to_be_visible()
    tab.page.locator("#key-input").fill(key)
    tab.page.locator("#key-form").get_by_role("button", name="Use key").click()


def test_a_keyed_gateway_asks_for_a_key_and_shows_admin_actions_to_admin_keys_only(
    open_console: OpenConsole, keyed_gateway: RunningGateway
) -> None:
    tab = open_console(keyed_gateway)
    page = tab.page
    tab.open("logs")
    enter_key(tab, "not-a-key")
    expect(page.locator("#key-error")).to_have_text("That key was refused.")

    enter_key(tab, INFERENCE)
    expect(page.locator("#access")).to_have_text("inference key")
    card = model_card(tab)
    expect(card.locator(".state")).to_have_text("unloaded")
    assert page.evaluate("location.hash") == "#models"  # the logs are admin-only
    expect(card.locator(".actions")).to_have_count(0)
    expect(page.locator("#pull-panel")).to_have_count(0)
    expect(page.get_by_role("button", name="Reload configuration")).to_have_count(0)
    for admin_only in ("logs", "metrics", "activity"):
        expect(page.locator(f'.tabs a[data-view="{admin_only}"]')).to_be_hidden()
    kept = page.evaluate(
        "[sessionStorage.getItem('llama-supervisor.key'), localStorage.length, document.cookie]"
    )
    assert kept == [INFERENCE, 0, ""]

    page.locator("#forget-key").click()
    enter_key(tab, ADMIN)
    expect(page.locator("#access")).to_have_text("admin key")
    expect(card.get_by_role("button", name="Unload")).to_be_visible()
    expect(page.locator('.tabs a[data-view="logs"]')).to_be_visible()


def test_a_view_that_cannot_load_says_so_and_the_others_work(console: ConsolePage) -> None:
    console.page.route("**/ui/views/metrics.js", lambda route: route.fulfill(status=404))
    console.open("metrics")
    expect(console.page.locator("#view-metrics")).to_have_text("The metrics view is not available.")
    console.page.get_by_role("link", name="Models").click()
    expect(model_card(console).locator(".state")).not_to_be_empty()
    expect(console.page.locator("#view-metrics")).to_be_hidden()
