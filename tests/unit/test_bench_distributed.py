"""The beyond-one-machine benchmark's pure parts (issue 20): the gateways' TOML, what a hop
adds and the split's ratio, paired within a round, the report's section, and a phase run
alone written into an earlier run's results without dropping the other sections. No timings
are asserted: a benchmark is not a test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import runner
from bench.distributed import (
    CHILD,
    FULL,
    GATEWAY,
    LOCAL,
    QUICK,
    SPLIT,
    VIA_PEER,
    describe,
    hop_row,
    rotated,
)
from bench.distributed_setups import PEER_NAME, find_rpc_server, peer_config, rpc_config
from bench.distributed_summary import summarize_distributed
from bench.loadgen import WorkloadResult
from bench.report import render
from bench.sections import alone, merged, read_previous
from bench.summary import summarize
from bench.targets import LlamaSettings
from supervisor.config import load_settings

REPO = Path(__file__).resolve().parents[2]
SETTINGS = LlamaSettings(Path("/opt/llama/bin/llama-server"), Path("/m/smol.gguf"), 8192, 16, 1)


def test_the_front_gateway_has_the_back_one_as_its_peer(tmp_path: Path) -> None:
    config = tmp_path / "front.toml"
    config.write_text(peer_config(SETTINGS, "http://127.0.0.1:41000"))
    settings = load_settings(config)
    [peer] = settings.peers
    assert (peer.name, peer.url, peer.models, peer.spillover) == (
        PEER_NAME, "http://127.0.0.1:41000", None, True,
    )  # fmt: skip
    assert (settings.parallel, settings.ctx_size, settings.threads) == (16, 8192, 1)
    assert settings.peer_check_interval_s == 1.0


def test_the_split_gateway_gives_every_layer_of_its_model_to_the_worker(tmp_path: Path) -> None:
    config = tmp_path / "split.toml"
    config.write_text(rpc_config(SETTINGS, "127.0.0.1:50052"))
    [model] = load_settings(config).models
    assert (model.file, model.n_gpu_layers, model.rpc) == ("smol.gguf", 99, ["127.0.0.1:50052"])


def test_the_worker_is_found_beside_llama_server_by_either_name(tmp_path: Path) -> None:
    server = tmp_path / "llama-server"
    assert find_rpc_server(server) is None
    (tmp_path / "rpc-server").write_text("")
    assert find_rpc_server(server) == tmp_path / "rpc-server"
    (tmp_path / "ggml-rpc-server").write_text("")  # the pinned llama.cpp's name wins
    assert find_rpc_server(server) == tmp_path / "ggml-rpc-server"


def test_a_hop_row_has_latency_and_first_token_percentiles() -> None:
    result = WorkloadResult(requests=5, latencies=[0.010, 0.011, 0.012, 0.013, 0.050])
    row = hop_row(result)
    assert row["requests"] == 5
    assert row["p50_ms"] == pytest.approx(12.0)
    assert row["p95_ms"] == pytest.approx(42.6)  # 13 + 0.8 * 37
    assert "ttft_p50_ms" not in row
    result.ttfts = [0.004, 0.006]
    assert hop_row(result)["ttft_p50_ms"] == pytest.approx(5.0)


def test_rotation_and_plans() -> None:
    assert rotated([1, 2, 3], 4) == [2, 3, 1]
    assert QUICK.rounds < FULL.rounds and QUICK.hop_requests < FULL.hop_requests


def hops(child: float, gateway: float, peer: float, spread: float = 1.0) -> dict[str, Any]:
    def one(p50: float) -> dict[str, float]:
        return {"p50_ms": p50, "p95_ms": p50 + spread, "ttft_p50_ms": p50 + 5, "ttft_p95_ms": p50}

    return {CHILD: one(child), GATEWAY: one(gateway), VIA_PEER: one(peer)}


def streams(local: float, split: float) -> dict[str, Any]:
    return {LOCAL: {"tokens_per_s": local, "ttft_p50_ms": 20.0},
            SPLIT: {"tokens_per_s": split, "ttft_p50_ms": 40.0}}  # fmt: skip


def raw_distributed() -> dict[str, Any]:
    return {
        "peer_hop": {
            "rounds": {
                "latency_c1": [hops(10.0, 10.5, 11.5), hops(12.0, 12.25, 14.0),
                               hops(9.0, 9.75, 10.5)],
                "stream_c1": [hops(20.0, 20.5, 21.5, 3.0)],
            },
            "tallies": {GATEWAY: {"requests": 330, "errors": {}, "disconnects": {}, "retries": 0}},
        },
        "rpc_split": {
            "rounds": {
                "stream_c1": [streams(100.0, 40.0), streams(80.0, 40.0), streams(90.0, 27.0)],
                "stream_c4": [streams(200.0, 50.0)],
            },
            "tallies": {SPLIT: {"requests": 30, "errors": {"http 503": 1}, "disconnects": {},
                                "retries": 0}},
            "details": {"child_rpc_flag": "127.0.0.1:50052", "child_gpu_layers_flag": "99",
                        "worker_rss_mb": {"idle": 5.0, "loaded": 90.0, "after": 91.0},
                        "first_token_s": {LOCAL: 0.5, SPLIT: 1.5},
                        "config": "threads = 1\n\n[[models]]\nrpc = [\"127.0.0.1:50052\"]\n"},
        },
    }  # fmt: skip


def test_each_hop_is_paired_within_a_round_then_the_median() -> None:
    summary = summarize_distributed(raw_distributed())
    latency = summary["peer_hop"]["latency_c1"]
    peer = latency["added"]["a peer hop"]
    assert peer["rounds"]["p50_ms"] == pytest.approx([1.0, 1.75, 0.75])
    assert peer["median"]["p50_ms"] == pytest.approx(1.0)
    assert latency["added"]["the gateway"]["median"]["p50_ms"] == pytest.approx(0.5)
    assert latency["median"][VIA_PEER]["p50_ms"] == pytest.approx(11.5)
    stream = summary["peer_hop"]["stream_c1"]["added"]["a peer hop"]["median"]
    assert stream == {"ttft_p50_ms": pytest.approx(1.0), "ttft_p95_ms": pytest.approx(1.0)}
    c1 = summary["rpc_split"]["stream_c1"]
    assert c1["ratio_rounds"] == pytest.approx([0.4, 0.5, 0.3])
    assert c1["ratio"] == pytest.approx(0.4)
    assert c1["median"][LOCAL]["tokens_per_s"] == pytest.approx(90.0)
    assert summary["rpc_split"]["stream_c4"]["ratio"] == pytest.approx(0.25)


def test_a_part_that_failed_or_could_not_run_says_so() -> None:
    raw = {"peer_hop": {"failed": "RuntimeError: peer-front did not list box2/smol"},
           "rpc_split": {"skipped": "no ggml-rpc-server beside /x"}}  # fmt: skip
    summary = summarize_distributed(raw)
    assert summary == {"peer_hop": {"failed": raw["peer_hop"]["failed"]},
                       "rpc_split": {"skipped": raw["rpc_split"]["skipped"]}}  # fmt: skip
    assert summarize_distributed({})["peer_hop"] == {"skipped": "not run"}


def fresh_results() -> dict[str, Any]:
    meta: dict[str, Any] = {
        "date": "2026-12-03 19:50 UTC",
        "command": ".venv/bin/python -m bench --only distributed",
        "duration_s": 240.0,
        "machine": {"cpu": "test", "llama_server": "0.5.0-dev", "llama_build_key": "a7eaf0"},
        "distributed": describe(SETTINGS, FULL),
    }
    meta["distributed"]["alone"] = alone(meta)
    raw = {"distributed": raw_distributed(), "phases_s": {"beyond one machine": 240.0}}
    return {"meta": meta, "summary": summarize(raw), "raw": raw}


def test_the_section_alone_renders_both_parts_and_their_errors() -> None:
    report = render(fresh_results())
    assert report.startswith("# Benchmarks: beyond one machine\n")
    assert "## Beyond one machine (issue 20)" in report
    assert f"| {VIA_PEER} | 11.50 | 12.50 |" in report
    assert (
        "| a peer hop | +1.00 | +0.75 to +1.75 | +1.00 | +0.75 to +1.75 | +1.00 | n/a |" in report
    )
    assert "| 1 | rpc worker | 40.0 | 0.400 (0.300 to 0.500) |" in report
    assert "`--rpc 127.0.0.1:50052` and `--n-gpu-layers 99`" in report
    assert "5.0 MB idle to 90.0 MB" in report
    assert '`[[models]]`, `rpc = ["127.0.0.1:50052"]`' in report
    assert "| rpc worker | 30 | 1 (http 503: 1) |" in report
    assert "Measured alone" in report and "0.5.0-dev, build key `a7eaf0`" in report


def test_a_part_that_did_not_run_is_shown_as_such() -> None:
    results = fresh_results()
    results["raw"]["distributed"]["rpc_split"] = {"skipped": "no ggml-rpc-server beside /x"}
    results["summary"] = summarize(results["raw"])
    report = render(results)
    assert "Not measured (skipped): no ggml-rpc-server beside /x" in report
    assert "| a peer hop |" in report


def test_a_phase_alone_replaces_its_own_figures_in_an_earlier_run_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    earlier = json.loads((REPO / "bench" / "results" / "latest.json").read_text())
    earlier["meta"]["distributed"] = {"stale": True}
    saved = tmp_path / "latest.json"
    saved.write_text(json.dumps(earlier))
    previous = read_previous(saved)
    assert previous == earlier
    fresh = fresh_results()
    results = merged(previous, fresh, "distributed")
    assert results["meta"]["date"] == earlier["meta"]["date"]  # the full run's header
    assert results["meta"]["distributed"] == fresh["meta"]["distributed"]
    assert results["summary"]["latency"] == earlier["summary"]["latency"]
    assert results["raw"]["several"] == earlier["raw"]["several"]
    assert results["raw"]["distributed"] == fresh["raw"]["distributed"]
    report = render(results)
    for section in ("## Non-streamed requests", "## Several models (issue 17)",
                    "## Beyond one machine (issue 20)", "## Running it"):  # fmt: skip
        assert section in report
    assert report.index("## Several models") < report.index("## Beyond one machine")
    assert "then a peer hop and an RPC worker on loopback" in report
    again = merged(results, fresh, "several")  # a rerun without several's figures drops them
    assert "several" not in again["raw"] and "several" not in again["summary"]


def test_nothing_to_merge_into_leaves_the_fresh_results(tmp_path: Path) -> None:
    assert read_previous(None) is None
    assert read_previous(tmp_path / "missing.json") is None
    (tmp_path / "broken.json").write_text("{")
    assert read_previous(tmp_path / "broken.json") is None
    (tmp_path / "other.json").write_text('{"meta": {}}')
    assert read_previous(tmp_path / "other.json") is None
    fresh = fresh_results()
    assert merged(None, fresh, "distributed") == fresh


def test_the_several_phase_rerun_into_a_full_report_says_so() -> None:
    earlier = json.loads((REPO / "bench" / "results" / "latest.json").read_text())
    earlier["meta"]["several"]["alone"] = alone(
        {"date": "2026-12-03 20:00 UTC", "command": "python -m bench --only several",
         "duration_s": 480.0, "machine": {"llama_server": "0.5.0-dev"}}
    )  # fmt: skip
    report = render(earlier)
    assert "## Several models (issue 17)\n\nRerun alone on 2026-12-03 20:00 UTC" in report


def test_only_picks_one_phase_and_refuses_to_skip_it() -> None:
    args = runner._parser().parse_args(["--only", "distributed", "--quick"])
    assert runner._several_plan(args) is None
    assert runner._distributed_plan(args) == QUICK
    args = runner._parser().parse_args(["--only", "several"])
    assert runner._distributed_plan(args) is None and runner._several_plan(args) is not None
    args = runner._parser().parse_args(["--rounds", "1"])
    plan = runner._distributed_plan(args)
    assert plan is not None and plan.rounds == 1
    args = runner._parser().parse_args(["--only", "distributed", "--no-distributed"])
    with pytest.raises(SystemExit):
        runner._distributed_plan(args)
