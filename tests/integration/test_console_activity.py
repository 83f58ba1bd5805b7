"""The console's Activity and Metrics views in a real browser (Debian's chromium) on a real
gateway with the demo model: a chat request made outside the page shows up live in the
Activity view with its tokens; the Metrics view draws its charts from the history."""

from __future__ import annotations

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
    console.open("activity")
    rows = console.page.locator("#activity-rows tr.activity-row")
    expect(rows.first).to_be_visible()
    # Made while the page follows: it arrives over the SSE follow, on top.
    chat(console_gateway, "Count to three", stream=True)
    top = rows.first
    expect(top).to_contain_text("/v1/chat/completions")
    expect(top).to_contain_text("stream")
    expect(top.locator("td.status")).to_have_text("200")
    entry = admin_call(console_gateway, "GET", "/api/v2/activity?limit=1").json()["data"][0]
    assert entry["stream"] is True and entry["completion_tokens"] > 0
    expect(top.locator("td").nth(6)).to_have_text(str(entry["completion_tokens"]))
    assert entry["tokens_per_second"] is not None and entry["ttft_ms"] is not None
    assert rows.count() >= 2
    console.screenshot("activity")


def test_metrics_view_draws_its_charts(
    console: ConsolePage, console_gateway: RunningGateway
) -> None:
    chat(console_gateway, "Hi")
    console.open("metrics")
    charts = console.page.locator("#metrics-charts figure.chart:not([hidden])")
    expect(charts.first).to_be_visible()
    assert charts.count() >= 6  # requests, tokens, ttft, queue, CPU, RAM (GPU only with GPUs)
    # A line appears once the history has two samples (one every 2 s).
    expect(console.page.locator('[data-chart="cpu"] path.chart-line')).to_have_count(1)
    expect(console.page.locator('[data-chart="queue"] .chart-key')).to_contain_text(MODEL_ID)
    expect(console.page.locator('[data-chart="requests"] .chart-y').first).to_have_text("0")
    console.screenshot("metrics")
