"""One llama-server child: what it is asked to be (``spec``: role, load parameters), its command
line (``argv``), its binary (``binary``), its key (``key``), spawning it so it dies with the
gateway (``launcher``, ``process``), its output (``output``, ``logs``), and a ready child with the
leases requests hold on it (``child``). Which children exist is the lifecycle's business."""
