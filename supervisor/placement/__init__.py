"""Placement: which cores, how many threads and which GPUs each llama-server child gets.

``cores`` finds the cores the gateway may give out, ``plan`` decides (pure functions);
``lifecycle/placer.py`` applies the plan to the live children.
"""
