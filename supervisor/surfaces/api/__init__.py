"""The ``/api`` surface: models list and info, load and unload (``routes``, ``dialect``), and chat
with server-side sessions, generate and embeddings (``chat_routes``, ``chat``)."""
