"""One llama-server child: what it is asked to be (``spec``: role, load parameters), its command
line (``argv``), its binary (``binary``), its key (``key``), spawning it so it dies with the
gateway (``launcher``, ``process``), its output (``output``, ``logs``), a ready child with the
leases requests hold on it (``child``), and the HTTP client of its health polls
(``poll_client``). Which children exist is the lifecycle's business."""
