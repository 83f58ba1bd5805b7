"""The console's Activity and Metrics views in a real browser (Debian's chromium) on a real
gateway with the demo model: a chat request made outside the page shows up live in the
Activity view with its tokens; the Metrics view draws its charts from the history."""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest
from console_browser import (  # noqa: F401  (fixtures)
    ConsolePage,
    admin_call,
    browser_fixture,
    console_fixture,
    console_gateway_fixture,
    open_console_fixture,
)
from harness import MODEL_ID, RunningGateway
from playwright.sync_api import expect

pytestmark = pytest.mark.integration


def chat(gateway: RunningGateway, content: str, *, stream: bool = False) -> None:
    body = {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 8,
        "stream": stream,
    }
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=120)
    response.raise_for_status()


def test_activity_view_shows_a_chat_request_with_its_tokens(
    console: ConsolePage, console_gateway: RunningGateway
) -> None:
    chat(console_gateway, "Say hello")  # listed by GET /api/v2/activity
    page = console.page
    lists: list[str] = []
    page.on("request", lambda r: lists.append(r.url) if "/api/v2/activity?" in r.url else None)
    console.open("activity")
    rows = page.locator("#activity-rows tr.activity-row")
    expect(rows.first).to_be_visible()
    newest = int(rows.first.get_attribute("data-id") or 0)
    # Made while the page follows: it arrives over the SSE follow, on top, with no new list.
    chat(console_gateway, "Count to three", stream=True)
    top = page.locator(f'#activity-rows tr.activity-row[data-id="{newest + 1}"]')
    expect(top).to_be_visible()
    expect(rows.first).to_have_attribute("data-id", str(newest + 1))
    expect(top).to_contain_text("/v1/chat/completions")
    expect(top).to_contain_text("stream")
    expect(top.locator("td.status")).to_have_text("200")
    entry = admin_call(console_gateway, "GET", "/api/v2/activity?limit=1").json()["data"][0]
    assert entry["id"] == newest + 1
    assert entry["stream"] is True and entry["completion_tokens"] > 0
    expect(top.locator("td").nth(6)).to_have_text(str(entry["completion_tokens"]))
    assert entry["tokens_per_second"] is not None and entry["ttft_ms"] is not None
    assert rows.count() >= 2
    assert len(lists) == 1  # the page listed once, then only followed
    console.screenshot("activity")


def test_metrics_view_draws_its_charts(
    console: ConsolePage, console_gateway: RunningGateway
) -> None:
    console.open("metrics")
    charts = console.page.locator("#metrics-charts figure.chart:not([hidden])")
    expect(charts.first).to_be_visible()
    assert charts.count() >= 6  # requests, tokens, ttft, queue, CPU, RAM (GPU only with GPUs)
    # A line appears once the history has two samples (one every 2 s).
    expect(console.page.locator('[data-chart="cpu"] path.chart-line')).to_have_count(1)
    expect(console.page.locator('[data-chart="queue"] .chart-key')).to_contain_text(MODEL_ID)
    # Traffic for a few samples (a point every 2 s): the charts draw it, and the legends'
    # latest values are above zero while it lasts.
    stop = threading.Event()
    traffic = threading.Thread(target=chat_until, args=(console_gateway, stop))
    traffic.start()
    try:
        above_zero = re.compile(r": (?:0\.\d*[1-9]|[1-9])")
        expect(console.page.locator('[data-chart="requests"] .chart-key')).to_have_text(
            above_zero, timeout=TRAFFIC_S * 1000
        )
        expect(console.page.locator('[data-chart="tokens"] .chart-key').first).to_have_text(
            above_zero, timeout=TRAFFIC_S * 1000
        )
        console.page.wait_for_timeout(6000)  # a few more points: lines in the screenshot
        console.screenshot("metrics")
    finally:
        stop.set()
        traffic.join()


TRAFFIC_S = 15


def chat_until(gateway: RunningGateway, stop: threading.Event) -> None:
    """Short streamed chats (timed to their first token) one after another until ``stop``
    (at most TRAFFIC_S seconds)."""
    deadline = time.monotonic() + TRAFFIC_S
    while not stop.is_set() and time.monotonic() < deadline:
        chat(gateway, "Hi", stream=True)
