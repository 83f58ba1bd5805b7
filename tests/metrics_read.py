"""Reading the gateway's Prometheus figures in tests."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def token_counts(client: httpx.Client, model: str) -> tuple[float, float]:
    """``model``'s tokens in and out so far, from GET /metrics."""
    families = text_string_to_metric_families(client.get("/metrics").text)
    samples = [(s.name, s.labels, s.value) for f in families for s in f.samples]

    def total(name: str) -> float:
        return sum(v for n, labels, v in samples if n == name and labels.get("model") == model)

    return total("llama_supervisor_tokens_in_total"), total("llama_supervisor_tokens_out_total")
