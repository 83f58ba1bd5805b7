"""The benchmark's pure parts: percentiles, SSE scanning, the canned stream's framing, and
the summary's pairing and verdicts. No timings are asserted: a benchmark is not a test."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.canned import json_body, sse_body
from bench.loadgen import WorkloadResult, merged
from bench.report import render
from bench.sse import EventKind, SSEScanner, classify
from bench.stats import difference, latency_summary, median, per_thousand, percentile, ratio
from bench.summary import medians, paired, summarize


def test_percentile_interpolates_between_closest_ranks() -> None:
    samples = [4.0, 1.0, 3.0, 2.0]
    assert percentile(samples, 0) == 1.0
    assert percentile(samples, 100) == 4.0
    assert percentile(samples, 50) == 2.5
    assert percentile(samples, 90) == pytest.approx(3.7)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(samples, 101)


def test_median_skips_missing_values_and_summaries_are_in_ms() -> None:
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([None]) is None
    assert latency_summary([0.001, 0.002, 0.003]) == {
        "p50_ms": pytest.approx(2.0),
        "p90_ms": pytest.approx(2.8),
        "p99_ms": pytest.approx(2.98),
    }
    assert per_thousand(0.5, 2000) == 0.25
    assert per_thousand(1.0, 0) is None


def test_scanner_joins_events_split_across_chunks() -> None:
    scanner = SSEScanner()
    assert scanner.feed(b'data: {"a":') == []
    assert scanner.feed(b" 1}\n\ndata: [DO") == [b'{"a": 1}']
    assert scanner.feed(b"NE]\r\n\r\n: comment\n\n") == [b"[DONE]"]
    assert scanner.pending == b""
    assert scanner.feed(b"data: cut") == []
    assert scanner.pending == b"data: cut"


def chunk(delta: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"choices": [{"index": 0, "delta": delta}], **extra}).encode()


def test_classify_tells_text_from_the_rest_and_finds_the_token_count() -> None:
    assert classify(chunk({"role": "assistant", "content": None})).kind is EventKind.OTHER
    assert classify(chunk({"content": "Hi"})).kind is EventKind.TOKEN
    assert classify(chunk({"content": ""})).kind is EventKind.OTHER
    assert classify(b'{"choices": [{"text": "Hi"}]}').kind is EventKind.TOKEN  # completions
    assert classify(b'{"content": "Hi", "stop": false}').kind is EventKind.TOKEN  # native
    assert classify(b'{"error": {"message": "gone"}}').kind is EventKind.ERROR
    assert classify(b"[DONE]").kind is EventKind.DONE
    assert classify(b"not json").kind is EventKind.OTHER
    closing = classify(chunk({}, timings={"predicted_n": 64}))
    assert (closing.kind, closing.reported_tokens) == (EventKind.OTHER, 64)
    assert classify(chunk({}, usage={"completion_tokens": 7})).reported_tokens == 7


def test_the_canned_stream_is_chunked_sse_that_the_scanner_reads_back() -> None:
    framed = sse_body(3)
    assert framed[-1] == b"0\r\n\r\n"
    payloads = []
    scanner = SSEScanner()
    for piece in framed[:-1]:
        size, _, rest = piece.partition(b"\r\n")
        body = rest.removesuffix(b"\r\n")
        assert int(size, 16) == len(body)
        payloads += scanner.feed(body)
    kinds = [classify(p).kind for p in payloads]
    assert kinds == [EventKind.OTHER] + [EventKind.TOKEN] * 3 + [EventKind.OTHER, EventKind.DONE]
    assert json.loads(json_body())["object"] == "chat.completion"


ROUNDS = [
    {"direct": {"p50_ms": 10.0}, "router": {"p50_ms": 13.0}, "gateway": {"p50_ms": 12.0}},
    {"direct": {"p50_ms": 20.0}, "router": {"p50_ms": 26.0}, "gateway": {"p50_ms": 20.5}},
    {"direct": {"p50_ms": 15.0}, "router": {"p50_ms": 18.0}, "gateway": {"p50_ms": 16.0}},
]


def test_figures_are_paired_within_a_round_then_the_median_taken() -> None:
    assert medians(ROUNDS)["gateway"]["p50_ms"] == 16.0
    assert paired(ROUNDS, "p50_ms", difference) == {"gateway": 1.0, "router": 3.0}
    # 1.3, 1.3, 1.2 within the rounds; the ratio of the medians (18/15) would say 1.2
    assert paired(ROUNDS, "p50_ms", ratio)["router"] == pytest.approx(1.3)


def stream_rounds(gateway_ratio: float) -> list[dict[str, Any]]:
    row = {"tokens_per_s": 100.0, "ttft_p50_ms": 1.0, "ttft_p99_ms": 2.0, "gap_p99_ms": 3.0}
    return [{"direct": row, "gateway": {**row, "tokens_per_s": 100.0 * gateway_ratio}}]


def raw_run(requests: int, errors: dict[str, int]) -> dict[str, Any]:
    tally = {"requests": requests, "errors": errors, "disconnects": {}, "retries": 0}
    return {
        "latency": {"1": ROUNDS},
        "streaming": {"1": stream_rounds(0.99), "16": stream_rounds(0.97)},
        "cpu": {
            "gateway": {"stream_c1": {"cpu_s": 1.0, "requests": 4, "tokens": 2000, "events": 2010}},
            "direct": {"stream_c1": {"cpu_s": 50.0, "requests": 4, "tokens": 2000, "events": 2010}},
        },
        "rss_mb": {"idle_start": 60.0, "peak_load": 90.0, "idle_end": 79.0},
        "cold": {"gateway": [1.0, 2.0, 3.0]},
        "swap": [{"swap_seconds": 0.5, "client_s": 0.6, "mode": "blue-green"}],
        "error_check": {"gateway": {**tally, "wall_s": 10.0, "rps": requests / 10.0}},
        "tallies": {"gateway": tally},
    }


META = {
    "date": "today",
    "duration_s": 60.0,
    "command": ".venv/bin/python -m bench",
    "machine": {"cpu": "a CPU"},
    "settings": {"model": "m.gguf", "ctx_size": 8192, "parallel": 16, "threads": 2},
    "plan": {"rounds": 3, "small": [[1, 10]], "stream": [[1, 2]], "stream_tokens": 8,
             "error_requests": 10_000, "relay_events": 64},
}  # fmt: skip


def test_verdicts_judge_each_target_and_report_renders() -> None:
    summary = summarize(raw_run(10_000, {}))
    verdicts = {v["target"]: v["pass"] for v in summary["verdicts"]}
    assert verdicts == {
        "added p50 latency ≤ 1 ms (max_tokens 1, concurrency 1)": True,
        "added p50 latency ≤ ⅓ of the router's (concurrency 1)": True,
        "streaming tokens/s ≥ 0.98 of direct's at every concurrency": False,
        "zero errors and disconnects over 10,000 requests": True,
        "gateway idle RSS ≤ 80 MB": True,
    }
    assert summary["gateway"]["cpu_s_per_1k_tokens"] == {"1": 0.5, "all": 0.5}
    assert summary["cold_load_s"]["gateway"] == 2.0
    text = render({"meta": META, "summary": summary, "raw": raw_run(10_000, {})})
    assert "| zero errors and disconnects over 10,000 requests |" in text
    assert "**FAIL**" in text and "**pass**" in text
    assert "nginx: not found" in text  # no nginx in the meta: the reference target was skipped


def test_streams_sharing_a_child_are_judged_with_the_gateways_cpu_charged() -> None:
    raw = raw_run(10_000, {})  # turns: 0.99 at c1, 0.97 at c16; gateway 2% of the model's CPU
    raw["shared"] = {"1": stream_rounds(1.0) + stream_rounds(0.99) + stream_rounds(0.995)}
    summary = summarize(raw)
    shared = summary["shared"]["1"]
    assert shared["ratio"] == pytest.approx(0.995)
    assert shared["cpu_share"] == pytest.approx(0.02)
    assert shared["charged"] == pytest.approx(0.995 * 0.98)
    verdict = next(v for v in summary["verdicts"] if v["target"].startswith("streaming"))
    assert verdict["pass"] is False  # 0.975: the gateway's CPU could cost the model 2%
    assert "separate llama-servers taking turns: c1: 0.990" in verdict["measured"]
    raw["cpu"]["direct"]["stream_c1"]["cpu_s"] = 200.0  # 0.5% of the model's CPU
    verdict = next(v for v in summarize(raw)["verdicts"] if v["target"].startswith("streaming"))
    assert verdict["pass"] is True  # judged on the shared child, not on the turns' 0.97
    text = render({"meta": META, "summary": summarize(raw), "raw": raw})
    assert (
        "| 1 | 100.0 | 99.5 | 0.9950 (0.9900 to 1.0000) | 0.50% | 0.990 (0.985 to 0.995) |" in text
    )
    del raw["cpu"]["direct"]
    verdict = next(v for v in summarize(raw)["verdicts"] if v["target"].startswith("streaming"))
    assert verdict["pass"] is None  # no figure for the model's CPU: nothing to charge


def test_nginx_is_a_reference_mentioned_beside_the_gateway_never_judged() -> None:
    raw = raw_run(10_000, {})
    raw["latency"] = {"1": [{**rows, "nginx": {"p50_ms": 15.5}} for rows in ROUNDS]}
    verdicts = summarize(raw)["verdicts"]
    added = next(v for v in verdicts if v["target"].startswith("added p50 latency ≤ 1 ms"))
    assert added["measured"] == "+1.00 ms over direct (nginx +0.50 ms)"
    assert len(verdicts) == 5


def test_added_latency_above_concurrency_1_is_reported_not_judged() -> None:
    raw = raw_run(10_000, {})
    raw["latency"]["16"] = [
        {"direct": {"p50_ms": 300.0}, "gateway": {"p50_ms": 290.0}, "router": {"p50_ms": 340.0}},
        {"direct": {"p50_ms": 310.0}, "gateway": {"p50_ms": 330.0}, "router": {"p50_ms": 300.0}},
    ]
    found = summarize(raw)["verdicts"]
    row = next(v for v in found if v["target"].endswith("concurrency 16)"))
    assert row["pass"] is None
    assert "gateway -10.00 ms to +20.00 ms; router -10.00 ms to +40.00 ms" in row["measured"]
    judged = [v["target"] for v in found if v["pass"] is not None]
    assert not any("concurrency 16" in target for target in judged)


def test_errors_fail_the_target_and_a_short_check_is_not_judged() -> None:
    def error_verdict(raw: dict[str, Any]) -> bool | None:
        found = summarize(raw)["verdicts"]
        return next(v["pass"] for v in found if v["target"].startswith("zero errors"))

    assert error_verdict(raw_run(10_000, {"http 502": 1})) is False
    assert error_verdict(raw_run(500, {})) is None


def test_merged_runs_add_up_as_one() -> None:
    first = WorkloadResult(requests=2, wall_s=1.0, latencies=[0.1], tokens=10, retries=1)
    first.errors["http 503"] += 1
    second = WorkloadResult(requests=3, wall_s=2.0, latencies=[0.2], gaps=[0.01], tokens=20)
    second.disconnects["cut"] += 1
    total = merged([first, second])
    assert (total.requests, total.wall_s, total.tokens, total.retries) == (5, 3.0, 30, 1)
    assert total.latencies == [0.1, 0.2] and total.gaps == [0.01]
    assert total.errors == {"http 503": 1} and total.disconnects == {"cut": 1}
    assert first.latencies == [0.1]  # the parts are left as they were
