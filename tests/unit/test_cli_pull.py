"""``models pull`` and ``models import`` through ``cli.main``, the gateway mocked with respx
speaking the pull contract (SSE ``progress`` then ``done`` or ``error``; refusals before the
stream; DELETE to cancel), and the pull's progress displays on their own."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from rich.console import Console

from supervisor.cli import pull_progress
from supervisor.cli.admin_client import sse_events
from supervisor.cli.program import main
from supervisor.cli.pull_progress import PlainPullProgress, pull_fields, pull_line

URL = "http://gateway.test:9999"
CLIENT = ["--url", URL]
SOURCE = "http://mirror.lan/models/smol.gguf"
SHA = "ab" * 32
MiB = 1024**2


@pytest.fixture
def gateway() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=False) as mock:
        yield mock


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLAMA_SUPERVISOR_URL", raising=False)
    monkeypatch.delenv("LLAMA_SUPERVISOR_ADMIN_KEY", raising=False)


def event(name: str, **data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def progress(done: int, total: int | None = 100 * MiB, rate: float = 10 * MiB) -> bytes:
    return event("progress", id="p1", file="smol.gguf", bytes=done, total=total, rate=rate)


DONE = event("done", id="p1", file="smol.gguf", model="smol", bytes=100 * MiB, sha256=SHA)


def stream(*events: bytes, then: BaseException | None = None) -> Iterator[bytes]:
    yield b": keepalive\n\n"
    yield from events
    if then is not None:
        raise then


def serve_pull(gateway: respx.MockRouter, *events: bytes, then: BaseException | None = None) -> Any:
    return gateway.post("/api/v2/models/pull").mock(
        side_effect=lambda request: httpx.Response(
            200, content=stream(*events, then=then), headers={"content-type": "text/event-stream"}
        )
    )


def test_progress_then_done_prints_the_model_and_the_next_step(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    route = serve_pull(gateway, progress(10 * MiB), progress(60 * MiB), DONE)
    argv = ["models", "pull", SOURCE, "--sha256", SHA, "--file", "smol.gguf", *CLIENT]
    assert main(argv) == 0
    assert json.loads(route.calls.last.request.content) == {
        "url": SOURCE, "sha256": SHA, "file": "smol.gguf"
    }  # fmt: skip
    out = capsys.readouterr().out
    assert "pulled smol.gguf (100.0MB): served as smol" in out
    assert "llama-supervisor models load smol" in out


def test_hf_urls_are_passed_through_and_absent_options_are_not_sent(
    gateway: respx.MockRouter,
) -> None:
    route = serve_pull(gateway, DONE)
    assert main(["models", "pull", "hf://org/repo/smol.gguf", *CLIENT]) == 0
    assert json.loads(route.calls.last.request.content) == {"url": "hf://org/repo/smol.gguf"}


def test_piped_output_prints_a_few_plain_lines_not_a_bar(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = [progress(n * MiB) for n in range(0, 101, 2)]
    serve_pull(gateway, *steps, DONE)
    assert main(["models", "pull", SOURCE, *CLIENT]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in err] == [
        "pulling smol.gguf: 26.0MB/100.0MB",
        "pulling smol.gguf: 50.0MB/100.0MB",
        "pulling smol.gguf: 76.0MB/100.0MB",
    ]
    assert "\x1b[" not in "".join(err)  # no terminal codes in a pipe


def test_json_prints_the_done_event(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    serve_pull(gateway, progress(1), DONE)
    assert main(["models", "pull", SOURCE, "--json", *CLIENT]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "smol"


def test_an_error_event_is_printed_and_exit_1(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = event(
        "error", id="p1", file="smol.gguf",
        error={"type": "checksum_mismatch", "message": "sha256 is cd…, not ab…"},
    )  # fmt: skip
    serve_pull(gateway, progress(50 * MiB), failed)
    assert main(["models", "pull", SOURCE, "--sha256", SHA, *CLIENT]) == 1
    captured = capsys.readouterr()
    assert "pull of smol.gguf failed (checksum_mismatch): sha256 is cd…, not ab…" in captured.err
    assert "pulled" not in captured.out


def test_a_stream_that_ends_without_done_is_exit_1(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    serve_pull(gateway, progress(50 * MiB))
    assert main(["models", "pull", SOURCE, *CLIENT]) == 1
    assert "ended the pull's stream before it finished" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (403, "source_not_allowed", "127.0.0.1 is a loopback address: set pull_allow_private"),
        (409, "pull_conflict", "smol.gguf is already in the models directory"),
        (400, "invalid_request", "only http and https URLs can be pulled"),
    ],
)
def test_a_refusal_before_the_stream_is_printed_as_the_gateways_words(
    gateway: respx.MockRouter,
    capsys: pytest.CaptureFixture[str],
    status: int,
    code: str,
    message: str,
) -> None:
    gateway.post("/api/v2/models/pull").respond(
        status, json={"error": {"message": message, "type": "x", "code": code}}
    )
    assert main(["models", "pull", SOURCE, "--api-key", "admin", *CLIENT]) == 1
    err = capsys.readouterr().err
    assert f"{message} [HTTP {status}]" in err
    assert "admin key" not in err and "Traceback" not in err


def test_a_key_refusal_still_names_the_key_options(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway.post("/api/v2/models/pull").respond(
        403, json={"error": {"message": "This route needs an admin key",
                             "code": "admin_key_required"}}
    )  # fmt: skip
    assert main(["models", "pull", SOURCE, "--api-key", "inference", *CLIENT]) == 1
    assert "this key is not an admin key" in capsys.readouterr().err


def test_ctrl_c_cancels_the_pull_and_exits_130(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    serve_pull(gateway, progress(10 * MiB), then=KeyboardInterrupt())
    cancel = gateway.delete("/api/v2/models/pulls/p1").respond(
        json={"id": "p1", "status": "cancelled"}
    )
    assert main(["models", "pull", SOURCE, *CLIENT]) == 130
    assert cancel.call_count == 1
    assert "pull p1 cancelled" in capsys.readouterr().err


def test_ctrl_c_before_the_first_event_finds_the_pull_by_its_file(
    gateway: respx.MockRouter,
) -> None:
    serve_pull(gateway, then=KeyboardInterrupt())
    gateway.get("/api/v2/models/pulls").respond(json={"object": "list", "data": [
        {"id": "other", "url": "http://x/other.gguf", "file": "other.gguf"},
        {"id": "p7", "url": SOURCE, "file": "mine.gguf"},
    ]})  # fmt: skip
    cancel = gateway.delete("/api/v2/models/pulls/p7").respond(json={"id": "p7"})
    assert main(["models", "pull", SOURCE, "--file", "mine.gguf", *CLIENT]) == 130
    assert cancel.call_count == 1


@pytest.mark.parametrize(
    ("source", "listed"),
    [
        ("hf://Org/Repo/smol.gguf", "https://huggingface.co/Org/Repo/resolve/main/smol.gguf"),
        ("https://user:pw@Mirror.lan/smol.gguf?sig=1", "https://mirror.lan/smol.gguf"),
    ],
)
def test_ctrl_c_before_the_first_event_finds_the_pull_by_its_listed_url(
    gateway: respx.MockRouter, source: str, listed: str
) -> None:
    """The gateway lists a pull's URL expanded and without credentials or query: the CLI
    compares that form, not what was typed."""
    serve_pull(gateway, then=KeyboardInterrupt())
    gateway.get("/api/v2/models/pulls").respond(json={"object": "list", "data": [
        {"id": "other", "url": "http://x/other.gguf", "file": "other.gguf"},
        {"id": "p7", "url": listed, "file": "smol.gguf"},
    ]})  # fmt: skip
    cancel = gateway.delete("/api/v2/models/pulls/p7").respond(json={"id": "p7"})
    assert main(["models", "pull", source, *CLIENT]) == 130
    assert cancel.call_count == 1


def test_ctrl_c_after_the_pull_ended_is_still_130(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    serve_pull(gateway, progress(10 * MiB), then=KeyboardInterrupt())
    gateway.delete("/api/v2/models/pulls/p1").respond(404, json={"error": {"message": "gone"}})
    assert main(["models", "pull", SOURCE, *CLIENT]) == 130
    assert "had already ended" in capsys.readouterr().err


IMPORTED = {
    "object": "model", "id": "phi", "file": "phi.gguf", "bytes": 3 * MiB,
    "sha256": SHA, "status": "imported",
}  # fmt: skip


def test_import_prints_the_result(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    route = gateway.post("/v1/import").respond(json=IMPORTED)
    argv = ["models", "import", "/media/card/phi.gguf", "--file", "phi.gguf", *CLIENT]
    assert main(argv) == 0
    body = json.loads(route.calls.last.request.content)
    assert body == {"path": "/media/card/phi.gguf", "file": "phi.gguf"}
    out = capsys.readouterr().out
    assert f"imported /media/card/phi.gguf as phi.gguf (3.0MB, sha256 {SHA}): served as phi" in out
    assert "llama-supervisor models load phi" in out


def test_import_json(gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]) -> None:
    gateway.post("/v1/import").respond(json=IMPORTED)
    assert main(["models", "import", "phi.gguf", "--json", *CLIENT]) == 0
    assert json.loads(capsys.readouterr().out) == IMPORTED


@pytest.mark.parametrize(
    ("status", "code"), [(403, "source_not_allowed"), (404, "not_found"), (409, "conflict")]
)
def test_import_refused(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str], status: int, code: str
) -> None:
    gateway.post("/v1/import").respond(
        status, json={"error": {"message": "/etc/passwd is outside import_dirs", "code": code}}
    )
    assert main(["models", "import", "/etc/passwd", *CLIENT]) == 1
    err = capsys.readouterr().err
    assert f"/etc/passwd is outside import_dirs [HTTP {status}]" in err
    assert "admin key" not in err


# --- the displays on their own ------------------------------------------------------------


def test_pull_fields_from_the_gateways_figures() -> None:
    data = {"bytes": 25 * MiB, "total": 100 * MiB, "rate": 5 * MiB}
    assert pull_fields(data) == {"amount": "25.0MB/100.0MB", "rate": "5.0MB/s",
                                 "left": "0:00:15 left"}  # fmt: skip
    unknown = pull_fields({"bytes": 3 * MiB, "total": None, "rate": 0})
    assert unknown == {"amount": "3.0MB", "rate": "-", "left": "-"}
    hours = pull_fields({"bytes": 0, "total": 3700 * MiB, "rate": MiB})
    assert hours["left"] == "1:01:40 left"


def test_pull_line() -> None:
    data = {"file": "smol.gguf", "bytes": 25 * MiB, "total": 100 * MiB, "rate": 5 * MiB}
    assert pull_line(data) == "pulling smol.gguf: 25.0MB/100.0MB (25%), 5.0MB/s, 0:00:15 left"
    assert pull_line({"file": "x.gguf", "bytes": 1024}) == "pulling x.gguf: 1KB, -"


def test_plain_progress_without_a_total_prints_once_per_period() -> None:
    lines: list[str] = []
    now = [0.0]
    plain = PlainPullProgress(lines.append, clock=lambda: now[0], every_s=30.0)
    for second in range(0, 100, 5):
        now[0] = float(second)
        plain.report({"file": "a.gguf", "bytes": second * MiB, "total": None, "rate": MiB})
    assert [line.split(":")[1].split(",")[0] for line in lines] == [" 30.0MB", " 60.0MB",
                                                                     " 90.0MB"]  # fmt: skip


def test_plain_progress_after_a_resume_prints_the_mark_reached_once() -> None:
    lines: list[str] = []
    plain = PlainPullProgress(lines.append)
    plain.report({"file": "a.gguf", "bytes": 80, "total": 100, "rate": 1})
    plain.report({"file": "a.gguf", "bytes": 90, "total": 100, "rate": 1})
    assert len(lines) == 1 and "(80%)" in lines[0]


def test_the_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=120)
    monkeypatch.setattr(pull_progress, "stderr_console", lambda: terminal)
    with pull_progress.pull_progress("smol.gguf", bar=True) as report:
        report({"file": "smol.gguf", "bytes": 50 * MiB, "total": 100 * MiB, "rate": 5 * MiB})
    shown = screen.getvalue()
    assert "pulling smol.gguf" in shown and "50.0MB/100.0MB" in shown
    assert "5.0MB/s" in shown and "0:00:10 left" in shown


def test_sse_events_keep_the_event_names() -> None:
    lines = ["event: progress", "data: {}", "", ": keepalive", "", "data: a", "data: b", ""]
    assert list(sse_events(lines)) == [("progress", "{}"), ("message", "a\nb")]


@pytest.mark.parametrize(
    ("command", "words"),
    [
        (["models"], ["pull", "import"]),
        (["models", "pull"], ["URL", "--sha256", "--file", "hf://", "pull_allow_private",
                              "Ctrl-C", "examples"]),
        (["models", "import"], ["PATH", "--sha256", "--file", "import_dirs", "examples"]),
    ],
    ids=lambda c: " ".join(c),
)  # fmt: skip
def test_help(command: list[str], words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for word in words:
        assert word in out, word
