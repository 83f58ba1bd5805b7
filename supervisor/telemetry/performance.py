"""The /api/v2 surface's ``performance`` of each model (``GET /api/v2/models/{id}``, ``models
status``): tokens generated and their average speed, from llama-server's ``timings``
(``predicted_n``, ``predicted_ms``) as the token meters read them off every answer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Performance:
    """One model's generated tokens and the time spent generating them."""

    tokens: int = 0
    seconds: float = 0.0

    @property
    def average_speed(self) -> float:
        """Tokens per second, to one decimal; 0 before any timed answer."""
        return round(self.tokens / self.seconds, 1) if self.seconds else 0.0


class PerformanceTable:
    """Every model's ``Performance``, by model id."""

    def __init__(self) -> None:
        self._models: dict[str, Performance] = {}

    def add(self, model: str, tokens: int, seconds: float) -> None:
        performance = self._models.get(model)
        if performance is None:
            performance = self._models[model] = Performance()
        performance.tokens += tokens
        performance.seconds += seconds

    def of(self, model: str) -> Performance:
        """A copy of ``model``'s figures (zero if it has answered nothing timed yet)."""
        figures = self._models.get(model) or Performance()
        return Performance(figures.tokens, figures.seconds)
