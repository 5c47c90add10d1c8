"""`nvme-agent run` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse
import logging
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("run", help="(not yet implemented)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.getLogger(__name__).error("nvme-agent run is not implemented yet")
    return 2
