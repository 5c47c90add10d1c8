"""Allow ``python -m nvme_agent``."""

import sys

from nvme_agent.cli.main import main

sys.exit(main())
