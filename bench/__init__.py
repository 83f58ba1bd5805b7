"""Benchmarks of the gateway (issue 6): a load generator, the targets it runs against, the
zero-cost upstream, and the report. Run with ``python -m bench``; see docs/benchmarks.md."""
