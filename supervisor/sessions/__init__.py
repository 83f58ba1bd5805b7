"""Server-side conversation sessions for the ``/api`` surface's chat, kept in SQLite
(``store``), and the locks that make requests on one session take turns (``locks``)."""
