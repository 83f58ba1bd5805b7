"""Passing a request on to a child and its answer back: the relay table (``table``: every
relayed route, declared once), the request limits (``limits``), what a relayed request needs
(``plan``), the pooled upstream client (``upstream``), what passes from a child's answer to the
client (``stream``: headers, SSE) and how failures are told (``failures``); and the two ways a
request is served: the socket-level lane (``lane``) and ASGI (``asgi_shortcut`` in front of
FastAPI, ``asgi`` for the forwarding and the streamed response)."""
