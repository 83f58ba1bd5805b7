"""``python -m bench``: see bench/runner.py and docs/benchmarks.md."""

from __future__ import annotations

import sys

from .runner import main

sys.exit(main())
