"""The several-models benchmark's pure parts (issue 17): what a measured window counts, the
ratios and verdicts, the report's section, and how a llama-server's placement is read off its
command line. No timings are asserted: a benchmark is not a test."""

from __future__ import annotations

from typing import Any

import pytest

from bench.loadgen import Outcome
from bench.report import render
from bench.several import ALONE, CHAT_EMBEDDINGS, TWO_MODELS, lanes, rotated
from bench.several_report import short_command
from bench.several_setups import EMBEDDINGS_KEY, Setup, _where, cpu_ranges
from bench.several_summary import summarize_several
from bench.summary import summarize
from bench.timed import CHAT, EMBEDDINGS, IN_FLIGHT, Done, failure_of, retry_seconds, window_row


def stream(started: float, ended: float, label: str = "smol-a", **extra: Any) -> Done:
    return Done(CHAT, label, started, ended, tokens=16, ttft=0.5, **extra)


def test_a_window_counts_what_ended_inside_it() -> None:
    done = [
        stream(1.0, 9.0),  # began in the warm-up, ended inside: counts, with its whole latency
        stream(10.0, 12.0, "smol-b"),
        stream(12.0, 21.0),  # ended after the window: not counted
        stream(2.0, 4.0),  # ended in the warm-up: not counted
        Done(EMBEDDINGS, "smol-a", 11.0, 11.5),
        Done(CHAT, "smol-a", 13.0, 20.0, failure=IN_FLIGHT),
    ]
    row = window_row(done, 5.0, 20.0)
    assert (row["streams"], row["tokens"], row["embeddings"]) == (2, 32, 1)
    assert row["streams_per_s"] == pytest.approx(2 / 15)
    assert row["completed_per_s"] == pytest.approx(3 / 15)
    assert row["latency_p50_ms"] == pytest.approx(5000.0)  # 8 s and 2 s
    assert row["ttft_p50_ms"] == pytest.approx(500.0)
    assert row["embedding_p50_ms"] == pytest.approx(500.0)
    assert (row["in_flight_at_end"], row["oldest_in_flight_s"]) == (1, 7.0)
    assert row["completed_by_label"] == {"smol-a": 2, "smol-b": 1}


def test_failures_are_deliberate_only_with_retry_after_and_the_warm_ups_apart() -> None:
    refused = Outcome(error="http 503", retry_after="1")
    assert failure_of(refused) == ("http 503 with Retry-After", True)
    assert failure_of(Outcome(error="http 429")) == ("http 429 without Retry-After", False)
    assert failure_of(Outcome(error="http 502", retry_after="1")) == ("http 502", False)
    assert failure_of(Outcome(disconnect="stream ended without [DONE]")) == (
        "disconnect: stream ended without [DONE]",
        False,
    )
    assert failure_of(Outcome()) == (None, False)
    assert retry_seconds("2") == 2.0
    assert retry_seconds(None) == retry_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.5
    done = [
        Done(CHAT, "smol-a", 6.0, 6.1, failure="http 503 with Retry-After", deliberate=True),
        Done(CHAT, "smol-a", 7.0, 7.1, failure="http 429 without Retry-After"),
        Done(CHAT, "smol-a", -1.0, -1.0, failure="ConnectError"),  # priming
        Done(CHAT, "smol-a", 1.0, 2.0, failure="http 503 with Retry-After", deliberate=True),
    ]
    row = window_row(done, 5.0, 20.0)
    assert (row["deliberate"], row["lost"]) == (1, 1)
    assert (row["warmup_deliberate"], row["warmup_lost"]) == (1, 1)
    assert row["errors"] == {"http 503 with Retry-After": 1, "http 429 without Retry-After": 1}
    assert row["streams"] == 0 and row["latency_p50_ms"] is None


def row(streams: float, embeddings: float = 0.0, lost: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "window_s": 15.0,
        "streams": streams * 15,
        "streams_per_s": streams,
        "embeddings": embeddings * 15,
        "embeddings_per_s": embeddings,
        "completed_per_s": streams + embeddings,
        "deliberate": 0,
        "lost": lost,
        "warmup_deliberate": 0,
        "warmup_lost": 0,
        "retries": 0,
        "errors": {"ConnectError": lost} if lost else {},
        "warmup_errors": {},
        "completed_by_label": {"smol-a": streams * 15},
        **extra,
    }


def raw_several(gateway_two: tuple[float, float], lost: int = 0) -> dict[str, Any]:
    first, second = gateway_two
    return {
        "rounds": {
            TWO_MODELS: [
                {"direct": row(2.0), "split": row(15.0), "router": row(3.0),
                 "gateway": row(15.0 * first)},
                {"split": row(10.0), "gateway": row(10.0 * second)},
            ],
            CHAT_EMBEDDINGS: [{"split": row(4.0, 10.0), "gateway": row(4.0, 8.0)}],
            ALONE: [{"direct": row(8.0), "gateway": row(7.9, lost=lost)}],
        },
        "setups": {},
    }  # fmt: skip


def verdicts(summary: dict[str, Any]) -> dict[str, bool | None]:
    return {v["target"].split(":")[0]: v["pass"] for v in summary["verdicts"]}


def test_ratios_are_paired_within_a_round_and_each_target_judged() -> None:
    summary = summarize_several(raw_several((0.95, 0.89)))
    two = summary["workloads"][TWO_MODELS]
    assert two["ratio_rounds"]["gateway"]["streams"] == pytest.approx([0.95, 0.89])
    assert two["ratio"]["gateway"]["streams"] == pytest.approx(0.92)
    assert two["ratio"]["direct"]["streams"] == pytest.approx(2.0 / 15.0)  # its one round
    assert two["median"]["split"]["streams_per_s"] == pytest.approx(12.5)
    both = summary["workloads"][CHAT_EMBEDDINGS]["ratio"]["gateway"]
    assert (both["streams"], both["embeddings"]) == (pytest.approx(1.0), pytest.approx(0.8))
    assert both["combined"] == pytest.approx(12.0 / 14.0)
    assert verdicts(summary) == {
        "two models, 16 clients each": True,
        "chat + embeddings on one model": False,  # embeddings at 0.8
        "one model alone": True,  # 7.9 of 8.0: 0.9875
        "nothing lost but deliberate 429/503 with Retry-After (gateway, every workload)": True,
    }
    measured = summary["verdicts"][1]["measured"]
    assert "streams 1.000, embeddings 0.800, together 0.857" in measured


def test_a_lost_request_anywhere_fails_and_a_missing_workload_is_not_judged() -> None:
    raw = raw_several((0.5, 0.5), lost=2)
    summary = summarize_several(raw)
    found = verdicts(summary)
    assert found["two models, 16 clients each"] is False
    lost = summary["verdicts"][-1]
    assert lost["pass"] is False and "2 lost in the measured windows" in lost["measured"]
    assert "ConnectError: 2" in lost["measured"]
    del raw["rounds"][ALONE]
    raw["rounds"][CHAT_EMBEDDINGS][0]["split"]["embeddings_per_s"] = 0.0  # no ratio to take
    found = verdicts(summarize_several(raw))
    assert found["one model alone"] is None
    assert found["chat + embeddings on one model"] is None


PLACEMENT = [
    {"pid": 11, "model": "smol-a", "role": "chat", "flags": {"--threads": "1"}, "cpus": "0",
     "n_threads": 1},
    {"pid": 12, "model": "smol-b", "role": "chat", "flags": {}, "cpus": "1", "n_threads": None},
]  # fmt: skip


def details(restarted: bool) -> dict[str, Any]:
    return {
        "commands": ["/opt/bin/llama-server --model /tmp/w/smol-a.gguf --port 40123"],
        "config": "parallel = 4\nqueue_max = 64\n",
        "placement": PLACEMENT,
        "restarted_in_warmup": restarted,
        "restarted_in_window": False,
    }


META = {
    "date": "today",
    "duration_s": 300.0,
    "command": ".venv/bin/python -m bench --only several",
    "machine": {"cpu": "a CPU"},
    "several": {"plan": {"rounds": 2, "seconds": 15.0, "warmup_s": 5.0, "reference_rounds": 1},
                "model": "m.gguf", "users": 32, "tokens": 16, "parallel": 4, "ctx_size": 2048,
                "split_threads": 1, "cores": 2},
}  # fmt: skip


def test_the_section_renders_alone_and_shows_placement_and_commands() -> None:
    raw = {"several": raw_several((0.95, 0.89)), "phases_s": {"several models": 300.0}}
    raw["several"]["setups"] = {TWO_MODELS: {"gateway": [details(True), details(False)]}}
    raw["several"]["rounds"][TWO_MODELS][0]["router"] = row(0.0, oldest_in_flight_s=19.5)
    text = render({"meta": META, "summary": summarize(raw), "raw": raw})
    assert text.startswith("# Benchmarks: several models")
    assert "router mode: nothing ended inside the window; as it ended, the oldest request" in text
    assert "in flight had run 19.5 s." in text
    assert "## Several models (issue 17)" in text
    assert "in the first 1 round(s) only" in text
    assert "| two models, 16 clients each: streams ≥ 0.9 of the hand split's |" in text
    assert "| gateway | 174 (11.6) | 0.920 (0.890 to 0.950) | 174 |" in text
    assert "| direct, cores split by hand | 188 (12.5) |  |" in text
    assert "| smol-a | chat | `--threads 1` | 0 | 1 |" in text
    assert "| smol-b | chat | `none` | 1 | n/a |" in text
    assert "children replaced during the warm-up in round(s) 1, during the window in none" in text
    assert "`llama-server --model smol-a.gguf --port PORT`<br>config: `parallel = 4`" in text
    assert "**FAIL**" in text and "**pass**" in text


def test_placement_is_read_off_a_llama_server_command_line() -> None:
    argv = ["/b/llama-server", "--model", "/m/a.gguf", "--alias", "smol-a", "-t", "1",
            "--threads-batch=1", "--cpu-range", "0-0", "--poll", "0", "--embeddings",
            "--port", "5"]  # fmt: skip
    assert _where(argv, "0") == {
        "model": "smol-a",
        "role": EMBEDDINGS_KEY,
        "flags": {"--threads": "1", "--threads-batch": "1", "--cpu-range": "0-0", "--poll": "0"},
        "cpus": "0",
    }
    assert _where(["/usr/bin/python", "-m", "supervisor.cli", "serve"], None) is None
    assert _where(["/b/llama-server", "--models-dir", "/m"], None) is None  # the router itself
    assert cpu_ranges([5, 0, 1, 2]) == "0-2,5"
    assert cpu_ranges([1]) == "1"
    assert short_command("/v/python -m supervisor.cli serve --port 8 --config /w/g.toml") == (
        "python -m supervisor.cli serve --port PORT --config g.toml"
    )


def test_the_lanes_split_the_users_as_the_issue_says() -> None:
    apart = Setup("split", urls={"smol-a": "http://a", "smol-b": "http://b",
                                 EMBEDDINGS_KEY: "http://e"})  # fmt: skip
    two = lanes(TWO_MODELS, apart)
    assert [(lane.label, lane.base_url, lane.users) for lane in two] == [
        ("smol-a", "http://a", 16),
        ("smol-b", "http://b", 16),
    ]
    assert two[0].body["max_tokens"] == 16 and two[0].body["stream"] is True
    mixed = lanes(CHAT_EMBEDDINGS, apart)
    assert [(lane.kind, lane.base_url, lane.path) for lane in mixed] == [
        (CHAT, "http://a", "/v1/chat/completions"),
        (EMBEDDINGS, "http://e", "/v1/embeddings"),
    ]
    one = Setup("gateway", urls={"smol-a": "http://g"})
    assert [(lane.base_url, lane.users) for lane in lanes(ALONE, one)] == [("http://g", 32)]
    assert lanes(CHAT_EMBEDDINGS, one)[1].base_url == "http://g"
    assert rotated(("a", "b", "c"), 4) == ["b", "c", "a"]


def test_in_a_whole_run_the_section_comes_after_the_others_before_the_method() -> None:
    tally = {"requests": 10, "errors": {}, "disconnects": {}, "retries": 0}
    flat = {"p50_ms": 1.0, "tokens_per_s": 10.0}
    raw: dict[str, Any] = {
        "latency": {"1": [{"direct": flat, "gateway": flat}]},
        "streaming": {"1": [{"direct": flat, "gateway": flat}]},
        "cpu": {},
        "rss_mb": {"idle_start": 60.0, "peak_load": 70.0, "idle_end": 61.0},
        "cold": {"gateway": [1.0]},
        "swap": [{"swap_seconds": 0.5, "client_s": 0.6, "mode": "blue-green"}],
        "error_check": {"gateway": {**tally, "wall_s": 1.0, "rps": 10.0}},
        "tallies": {"gateway": tally},
        "several": raw_several((1.0, 1.0)),
    }
    meta = META | {
        "settings": {"model": "m.gguf", "ctx_size": 8192, "parallel": 16, "threads": 1},
        "plan": {"rounds": 1, "small": [[1, 10]], "stream": [[1, 2]], "stream_tokens": 8,
                 "error_requests": 10, "relay_events": 64},
    }  # fmt: skip
    summary = summarize(raw)
    assert len(summary["verdicts"]) == 5  # issue 6's table is as it was
    text = render({"meta": meta, "summary": summary, "raw": raw})
    assert text.startswith("# Benchmarks\n")
    assert text.index("## Cold load") < text.index("## Several models") < text.index("## Reading")


def test_a_setup_that_failed_is_shown_and_fails_its_target_if_it_is_the_gateway() -> None:
    raw = raw_several((1.0, 1.0))
    raw["rounds"][ALONE][0]["gateway"] = {"failed": "RuntimeError: gateway exited (1)"}
    raw["rounds"][CHAT_EMBEDDINGS][0]["split"] = {"failed": "RuntimeError: split exited (1)"}
    raw["setups"] = {ALONE: {"gateway": [{"failed": "RuntimeError: gateway exited (1)"}]}}
    summary = summarize_several(raw)
    found = {v["target"].split(":")[0]: v for v in summary["verdicts"]}
    assert found["one model alone"]["pass"] is False
    alone = found["one model alone"]["measured"]
    assert alone == "gateway failed: RuntimeError: gateway exited (1)"
    assert found["chat + embeddings on one model"]["pass"] is None
    text = render({"meta": META, "summary": {"several": summary}, "raw": {"several": raw}})
    assert "gateway failed in 1 round(s): RuntimeError: gateway exited (1)" in text
