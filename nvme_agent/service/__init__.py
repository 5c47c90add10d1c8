"""The daemon: its life (``daemon``) and its control socket (``control``)."""
