"""Server-side conversation sessions for the ``/api`` surface's chat: what a store promises
(``base``), kept in SQLite (``store``, the default) or in PostgreSQL shared by several gateways
(``postgres``, chosen by ``pick``), and the locks that make requests on one session take turns
(``locks``; across gateways, ``advisory``)."""
