"""The command line (``nvme-agent SUBCOMMAND``) and what is generated from it (man page,
completion).  ``main`` is the dispatcher; each subcommand lives in ``commands``."""
