"""llama-server children: argv, spawn, readiness, stop, and the pool of running children."""
