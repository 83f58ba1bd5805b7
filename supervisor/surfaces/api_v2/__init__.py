"""The ``/api/v2`` surface: models with their lifecycle state, load, unload, hot swap, reload,
metrics, health, chat (``routes``, ``dialect``, ``chat``) and a model's logs (``logs``)."""
