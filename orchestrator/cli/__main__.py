"""`python -m orchestrator.cli ...` = `headforge ...`."""

import sys

from orchestrator.cli import main

sys.exit(main())
