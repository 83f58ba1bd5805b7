"""The console's pull and import panel (views/pull.js, inside the Models view) in a real
browser on a real gateway that may pull from loopback: a pull from a slow local server shows
its progress bar and figures, ends with the id it is served under, and the model's card
appears without a restart; Cancel stops a running pull (listed meanwhile) and leaves nothing;
leaving the view stops following a pull, which runs on in the list and is cancelled from
there; a checksum mismatch is shown as the gateway's error; an import from the import folder
is served, one from outside it refused."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_browser import (  # noqa: F401  (fixtures)
    ConsolePage,
    OpenConsole,
    browser_fixture,
    open_console_fixture,
)
from harness import MODEL_ID, RunningGateway
from model_server import ModelServer, model_server
from playwright.sync_api import expect

pytestmark = pytest.mark.integration
MiB = 1024**2
DEMO_FILE = f"{MODEL_ID}.gguf"
OUTSIDE = "outside-model.gguf"  # a good model file beside the import folder, not in it


@pytest.fixture(scope="module")
def demo_bytes(demo_model_dir: Path) -> bytes:
    return (demo_model_dir / DEMO_FILE).read_bytes()


@pytest.fixture(scope="module")
def mirror(demo_bytes: bytes) -> Iterator[ModelServer]:
    """The demo model at /smol.gguf, sent in 1 MiB pieces (each test sets the pace)."""
    with model_server() as server:
        server.serve("/smol.gguf", demo_bytes)
        server.faults.chunk = MiB
        yield server


@pytest.fixture(scope="module")
def pull_gateway(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningGateway, Path]]:
    """An open gateway serving the demo model, allowed to pull from loopback, with an import
    folder holding a copy of the demo model (and another copy beside it, outside the folder);
    and its models directory."""
    directory = tmp_path_factory.mktemp("console-pull")
    models, card = directory / "models", directory / "card"
    models.mkdir()
    card.mkdir()
    os.link(demo_model_dir / DEMO_FILE, models / DEMO_FILE)
    os.link(demo_model_dir / DEMO_FILE, card / "card-model.gguf")
    os.link(demo_model_dir / DEMO_FILE, directory / OUTSIDE)
    config = directory / "config.toml"
    config.write_text(f"ctx_size = 2048\nparallel = 1\nimport_dirs = [{json.dumps(str(card))}]\n")
    running = RunningGateway(
        llama_server_bin, models, directory / "gateway.log", "--config", str(config),
        env={"LLAMA_SUPERVISOR_PULL_ALLOW_PRIVATE": "true"},
    )  # fmt: skip
    yield running, models
    running.stop()


@pytest.fixture
def tab(open_console: OpenConsole, pull_gateway: tuple[RunningGateway, Path]) -> ConsolePage:
    page = open_console(pull_gateway[0])
    page.open("models")
    expect(page.page.locator("#pull-form")).to_be_visible()
    return page


def start_pull(tab: ConsolePage, url: str, file: str, sha256: str = "") -> None:
    form = tab.page.locator("#pull-form")
    form.locator('input[name="url"]').fill(url)
    form.locator('input[name="sha256"]').fill(sha256)
    form.locator('input[name="file"]').fill(file)
    tab.page.locator("#pull-start").click()


def test_a_pull_shows_its_progress_then_the_model_is_served(
    tab: ConsolePage, mirror: ModelServer, demo_bytes: bytes
) -> None:
    mirror.faults.chunk_delay_s = 0.05  # about 5 s for the 94 MiB
    sha256 = hashlib.sha256(demo_bytes).hexdigest()
    start_pull(tab, f"{mirror.url}/smol.gguf", "smol-browser.gguf", sha256)
    page = tab.page
    expect(page.locator("#pull-active")).to_be_visible()
    expect(page.locator("#pull-figures")).to_contain_text(" of 93.8 MiB")
    expect(page.locator("#pull-figures")).to_contain_text("/s")
    assert page.locator("#pull-progress").evaluate("bar => bar.value > 0 && bar.max > 1")
    tab.screenshot("pull")
    expect(page.locator("#pull-notice")).to_contain_text("served as", timeout=60_000)
    expect(page.locator("#pull-notice")).to_have_class("notice ok")
    expect(page.locator("#pull-active")).to_be_hidden()
    expect(page.locator('article.model[data-model^="smol-browser"]')).to_be_visible()


def test_cancel_stops_a_running_pull_and_leaves_nothing(
    tab: ConsolePage, mirror: ModelServer, pull_gateway: tuple[RunningGateway, Path]
) -> None:
    mirror.faults.chunk_delay_s = 0.3  # about 30 s: long enough to cancel
    start_pull(tab, f"{mirror.url}/smol.gguf", "smol-cancel.gguf")
    page = tab.page
    expect(page.locator("#pull-figures")).to_contain_text(" of 93.8 MiB")
    expect(page.locator("#pulls-table tr[data-pull]")).to_contain_text("smol-cancel.gguf")
    page.locator("#pull-cancel").click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#pull-notice")).to_contain_text("(cancelled)")
    expect(page.locator("#pull-notice")).to_have_class("notice error")
    expect(page.locator("#pulls-empty")).to_be_visible()
    assert not (pull_gateway[1] / "smol-cancel.gguf").exists()


def test_a_checksum_mismatch_is_shown(tab: ConsolePage, mirror: ModelServer) -> None:
    mirror.faults.chunk_delay_s = 0.0
    start_pull(tab, f"{mirror.url}/smol.gguf", "smol-bad.gguf", "0" * 64)
    notice = tab.page.locator("#pull-notice")
    expect(notice).to_contain_text("failed (checksum_mismatch)")
    expect(notice).to_have_class("notice error")


def test_import_from_the_import_folder_and_refused_outside_it(
    tab: ConsolePage, pull_gateway: tuple[RunningGateway, Path]
) -> None:
    form = tab.page.locator("#import-form")
    notice = tab.page.locator("#import-notice")
    form.locator('input[name="path"]').fill("card-model.gguf")
    form.locator('input[name="file"]').fill("smol-card.gguf")
    tab.page.locator("#import-start").click()
    expect(notice).to_contain_text("served as", timeout=60_000)
    expect(notice).to_have_class("notice ok")
    expect(tab.page.locator('article.model[data-model^="smol-card"]')).to_be_visible()

    outside = pull_gateway[1].parent / OUTSIDE  # a .gguf: refused for where it is, no more
    form.locator('input[name="path"]').fill(str(outside))
    form.locator('input[name="file"]').fill("smol-outside.gguf")
    tab.page.locator("#import-start").click()
    # The gateway's 403 (the path may be shown cut to its last part).
    expect(notice).to_have_text(re.compile(rf"^'[^']*{OUTSIDE}' is outside import_dirs$"))
    expect(notice).to_have_class("notice error")
    assert not (pull_gateway[1] / "smol-outside.gguf").exists()


def test_leaving_the_view_stops_following_and_the_list_cancels(
    tab: ConsolePage, mirror: ModelServer, pull_gateway: tuple[RunningGateway, Path]
) -> None:
    mirror.faults.chunk_delay_s = 0.3
    start_pull(tab, f"{mirror.url}/smol.gguf", "smol-away.gguf")
    page = tab.page
    expect(page.locator("#pull-figures")).to_contain_text(" of 93.8 MiB")
    page.locator('.tabs a[data-view="playground"]').click()
    page.locator('.tabs a[data-view="models"]').click()
    expect(page.locator("#pull-notice")).to_contain_text("Stopped following the pull")
    row = page.locator('#pulls-table tr[data-pull]:has-text("smol-away.gguf")')
    expect(row).to_be_visible()  # the gateway carried on
    row.locator("button").click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#pulls-empty")).to_be_visible()
    assert not (pull_gateway[1] / "smol-away.gguf").exists()
