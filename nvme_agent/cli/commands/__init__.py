"""Subcommands of ``nvme-agent``; each module has ``register(subparsers)``."""
