"""The one port: uvicorn with a gateway's manners (``server``, ``sdnotify``, ``drain``), the HTTP
protocol (``protocol``, ``intake_protocol``) with its bounds on what a client may hold
(``intake``), API keys (``auth``), the ASGI middleware every request passes (``guard``,
``body_limit``) and the error answers in each surface's format (``error_responses``)."""
