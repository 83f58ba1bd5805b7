"""The web console in a real browser (Debian's chromium) on a real gateway with the demo model:
the models view shows the model's live state and its buttons load and unload it; the logs view
follows a child's output live; the playground streams a reply and its Stop button cancels the
request; a keyed gateway asks for a key and shows admin actions to admin keys only. Every tab
also checks (console_browser.ConsolePage) that nothing came from another origin and nothing
broke the Content-Security-Policy."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
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
from harness import MODEL_ID, RunningGateway, wait_for
from playwright.sync_api import Locator, Page, Route, expect

pytestmark = pytest.mark.integration
INFERENCE = "console-inference-key"
ADMIN = "console-admin-key"
LONG_TOKENS = 6000
FREED_WITHIN = 10.0


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


def slots_busy(gateway: RunningGateway) -> bool:
    """Whether the child generates now, by its own word: its /slots, relayed by the gateway."""
    slots = httpx.get(f"{gateway.url}/slots", params={"model": MODEL_ID}, timeout=5).json()
    return any(slot["is_processing"] for slot in slots)


def without_end(route: Route) -> None:
    """The playground's request with llama.cpp's ``ignore_eos`` added: exactly max_tokens
    tokens, so a reply that stops early was stopped."""
    body = json.loads(route.request.post_data or "{}")
    route.continue_(post_data=json.dumps({**body, "ignore_eos": True}))


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

    # Thousands of tokens take SmolLM2 far longer than FREED_WITHIN on any machine here, so a
    # slot that frees within it was freed by the Stop, not by the end of the reply.
    page.route("**/v1/chat/completions", without_end)
    page.get_by_role("button", name="Clear").click()
    page.locator("#chat-max-tokens").fill(str(LONG_TOKENS))
    page.locator("#chat-input").fill("Tell me a long story.")
    page.locator("#chat-send").click()
    reply = page.locator(".message.assistant").last
    expect(reply.locator(".content")).not_to_be_empty()
    assert model_state(console_gateway)["in_flight"] == 1  # still streaming
    assert slots_busy(console_gateway)
    page.locator("#chat-stop").click()
    expect(reply).to_have_attribute("data-outcome", "stopped")
    expect(page.locator("#chat-send")).to_be_enabled()
    assert wait_for(lambda: not slots_busy(console_gateway), timeout=FREED_WITHIN)
    assert wait_for(lambda: model_state(console_gateway)["in_flight"] == 0, timeout=FREED_WITHIN)
    entry = admin_call(console_gateway, "GET", "/api/v2/activity?limit=1").json()["data"][0]
    assert entry["route"] == "/v1/chat/completions" and entry["stream"] is True
    assert (entry["completion_tokens"] or 0) < LONG_TOKENS // 2, entry  # cut short


def test_clear_during_a_reply_starts_a_conversation_without_it(console: ConsolePage) -> None:
    page = console.page
    console.open("playground")
    expect(page.locator(f'#chat-model option[value="{MODEL_FILE}"]')).to_be_attached()
    page.route("**/v1/chat/completions", without_end)
    page.locator("#chat-max-tokens").fill(str(LONG_TOKENS))
    page.locator("#chat-input").fill("Tell me a long story.")
    page.locator("#chat-send").click()
    expect(page.locator(".message.assistant .content")).not_to_be_empty()
    page.get_by_role("button", name="Clear").click()  # mid-reply: stops it and starts over
    expect(page.locator("#chat-send")).to_be_enabled()
    page.locator("#chat-max-tokens").fill("4")
    page.locator("#chat-input").fill("Hi")
    with page.expect_request("**/v1/chat/completions") as asked:
        page.locator("#chat-send").click()
    messages = json.loads(asked.value.post_data or "{}")["messages"]
    assert messages == [{"role": "user", "content": "Hi"}]  # nothing of the cleared reply
    expect(page.locator(".message.assistant")).to_have_count(1)
    expect(page.locator(".message.assistant")).to_have_attribute("data-outcome", "done")


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


def test_a_hidden_view_and_a_background_tab_ask_for_nothing(
    console: ConsolePage, console_gateway: RunningGateway
) -> None:
    """Views poll or stream only while shown: after a walk through every tab, ending on the
    playground (which asks for nothing by itself), the page makes no request, and the logs
    and activity streams were closed; in a background tab even the shown view stops."""
    admin_call(console_gateway, "POST", f"/api/v2/models/{MODEL_FILE}/load")
    page = console.page
    asked: list[str] = []
    closed: list[str] = []
    page.on("request", lambda request: asked.append(urlsplit(request.url).path))
    page.on("requestfailed", lambda request: closed.append(urlsplit(request.url).path))
    console.open("models")
    expect(model_card(console).locator(".state")).to_have_text("ready")
    page.locator('.tabs a[data-view="logs"]').click()
    expect(page.locator("#log-lines .log-line").first).to_be_visible()
    with page.expect_request("**/api/v2/metrics/history"):
        page.locator('.tabs a[data-view="metrics"]').click()
    with page.expect_request("**/api/v2/activity/stream*"):
        page.locator('.tabs a[data-view="activity"]').click()
    page.locator('.tabs a[data-view="playground"]').click()
    expect(page.locator(f'#chat-model option[value="{MODEL_FILE}"]')).to_be_attached()
    logs, activity = f"/api/v2/models/{MODEL_FILE}/logs/stream", "/api/v2/activity/stream"
    assert settles(page, lambda: {logs, activity} <= set(closed))
    quiet_from = len(asked)
    page.wait_for_timeout(QUIET_MS)
    assert asked[quiet_from:] == []

    with page.expect_request("**/api/v2/metrics/history"):
        page.locator('.tabs a[data-view="metrics"]').click()
    page.evaluate(BACKGROUND, True)
    quiet_from = len(asked)
    page.wait_for_timeout(QUIET_MS)
    assert asked[quiet_from:] == []
    with page.expect_request("**/api/v2/metrics/history"):
        page.evaluate(BACKGROUND, False)


def settles(page: Page, predicate: Callable[[], bool], timeout_ms: int = 10_000) -> bool:
    """Like harness.wait_for, but waiting in the page: Playwright delivers a page's events
    (requests, failures) only while the test calls it."""
    for _ in range(timeout_ms // 100):
        if predicate():
            return True
        page.wait_for_timeout(100)
    return predicate()


# The tab sent to the background (or brought back) as the browser would tell the page.
BACKGROUND = """(hidden) => {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
    Object.defineProperty(document, "visibilityState", {
        configurable: true, get: () => (hidden ? "hidden" : "visible") });
    document.dispatchEvent(new Event("visibilitychange"));
}"""
QUIET_MS = 5000  # more than two of the 2 s polls


# Chunks as a server (or a proxy) might cut them, each sent alone: an event whole, one split
# in its data, CRLF line ends, a CRLF split between chunks (twice, one of them in the blank
# line), a comment, a lone CR ending lines, a named event, and a block the stream ends inside.
SSE_CHUNKS = [
    'data: {"a": 1}\n\n',
    "data: pa",
    "rt\n\n",
    'event: progress\r\ndata: {"bytes": 2}\r\n\r\n',
    "data: one\r",
    "\ndata: two\r\n\r",
    "\n",
    ": keepalive\n\n",
    "data: x\r",
    "\r",
    "event: done\ndata: [DONE]\n\n",
    "data: cut off",
]
SSE_EVENTS = [
    {"event": "message", "data": {"a": 1}},
    {"event": "message", "data": "part"},
    {"event": "progress", "data": {"bytes": 2}},
    {"event": "message", "data": "one\ntwo"},
    {"event": "message", "data": "x"},
    {"event": "done", "data": "[DONE]"},
]
READ_EVENTS = """async (chunks) => {
    const { Api } = await import("/ui/api.js");
    const real = window.fetch;
    window.fetch = async () => {
        const encoder = new TextEncoder();
        let next = 0;
        const body = new ReadableStream({
            async pull(controller) {
                await new Promise((resolve) => setTimeout(resolve, 5));
                if (next < chunks.length) controller.enqueue(encoder.encode(chunks[next++]));
                else controller.close();
            },
        });
        return new Response(body, { headers: { "Content-Type": "text/event-stream" } });
    };
    try {
        const seen = [];
        for await (const event of new Api(() => null).events("/stubbed")) seen.push(event);
        return seen;
    } finally {
        window.fetch = real;
    }
}"""


def test_the_event_stream_reader_and_the_dom_helper(console: ConsolePage) -> None:
    page = console.page
    console.open("playground")  # a view that asks for nothing while the fetch is stubbed
    expect(page.locator(f'#chat-model option[value="{MODEL_FILE}"]')).to_be_attached()
    assert page.evaluate(READ_EVENTS, SSE_CHUNKS) == SSE_EVENTS
    refused = page.evaluate(
        """import("/ui/ui.js").then(({ el }) => [
            { style: "color: red" }, { onclick: "alert(1)" }, { ONCLICK: "x" }, { Style: "x" },
        ].map((attrs) => {
            try { el("div", attrs); return "made"; } catch (e) { return e.name; }
        }))"""
    )
    assert refused == ["TypeError"] * 4
    made = page.evaluate(
        """import("/ui/ui.js").then(({ el }) => el("a", { class: "x", href: "#logs",
            onclick: () => {}, hidden: false }, "text").outerHTML)"""
    )
    assert made == '<a class="x" href="#logs">text</a>'
