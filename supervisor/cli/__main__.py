"""``python -m supervisor.cli``."""

import sys

from supervisor.cli.program import main

sys.exit(main())
