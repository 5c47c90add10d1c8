"""Allow ``python -m nvme_agent``."""

import sys

from nvme_agent.cli import main

sys.exit(main())
