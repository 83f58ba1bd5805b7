"""Server-side conversation sessions for the ``/api`` surface's chat, kept in SQLite (``store``)."""
