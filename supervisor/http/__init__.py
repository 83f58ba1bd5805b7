"""The one port: uvicorn with a gateway's manners (``server``, ``sdnotify``, ``drain``), the HTTP
protocol (``protocol``, ``intake_protocol``) with its bounds on what a client may hold
(``intake``); what both ways in (the relay lane and ASGI) share: who is let in (``admission``,
with the API keys of ``auth``), what is counted of each request (``observer``) and the error
answers in each surface's format (``error_responses``); and the ASGI middleware every other
request passes (``observer.TelemetryMiddleware``, then ``guard``, which also counts chunked
bodies against the limit with ``body_limit``)."""
