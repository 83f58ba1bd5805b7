"""llama-supervisor: one dependable gateway in front of supervised llama.cpp servers."""

__version__ = "0.1.0"
