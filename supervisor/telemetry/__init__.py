"""What the gateway counts and shows about itself: Prometheus metrics (``prometheus``, served at
``/metrics``), token counts found in answers (``tokens``), each model's generation speed
(``performance``, for ``/api/v2/models/{id}``) and the host's figures (``host``, for
``/api/v2/metrics``, ``/api/v2/health`` and ``/v1/stats``)."""
