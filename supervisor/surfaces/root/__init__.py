"""The routes every surface shares: ``/health``, ``/`` and ``/metrics``."""
