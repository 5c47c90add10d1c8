"""The ``nvme-agent`` program: ``python -m nvme_agent`` and the installed console script.

Tests and tools that call :func:`nvme_agent.cli.main.main` in their own process do not pass
here; only a process that *is* nvme-agent does.
"""

from __future__ import annotations

import sys

#: The modules that map OpenSSL (libssl, libcrypto): ~4.5 MiB of an idle daemon's memory, a
#: seventh of it (issue 13).  nvme-agent speaks no TLS, and its only hashes (SHA-256 of the
#: policy text and of template values, SHA-1 in the harness) come from CPython's built-in
#: implementations when ``_hashlib`` is absent, with the same digests.  Nothing imports them
#: on purpose: asyncio (``base_events``, ``selector_events``, ``sslproto``), ``hashlib`` and
#: ``hmac`` (through ``secrets``) try them and take their documented no-OpenSSL path on
#: ImportError, the one CPython builds without OpenSSL take.
WITHOUT_OPENSSL = ("ssl", "_ssl", "_hashlib")


def without_openssl() -> None:
    """Make an import of OpenSSL's modules fail in this process (``None`` in ``sys.modules``
    is the import system's "not available").  A module already loaded stays: then there is
    nothing to win, and a user of it would break."""
    for name in WITHOUT_OPENSSL:
        if name not in sys.modules:
            # typeshed types sys.modules without the None the import system documents.
            sys.modules[name] = None  # type: ignore[assignment]


def main() -> int:
    without_openssl()
    # Imported after the line above: the CLI imports asyncio and hashlib.
    from nvme_agent.cli.main import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
