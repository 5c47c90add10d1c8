"""Fixed journal ``MESSAGE_ID`` values, one per kind of action outcome.

Query them with ``journalctl MESSAGE_ID=<id>``.  They never change between releases.
"""

from __future__ import annotations

#: An action finished successfully (exec, systemd, signal, grow, or anything without its own id).
ACTION_OK = "7df4afb52a5a4d9ba2783032738af7cf"
#: An action failed; the entry carries the error text.
ACTION_FAILED = "df24407a679046148ca280c4f00919d1"
#: An action was cancelled (its namespace went away first) or skipped (an earlier one failed).
ACTION_SKIPPED = "5554545a6d7c403b9d0ef167c242711d"
#: A filesystem was mounted (or found already mounted at its target).
MOUNTED = "c0b49db32c714b3a922e56786871f41c"
#: A filesystem was unmounted cleanly.
UNMOUNTED = "bc9bffcf67c047798252c78b7bdef9f5"
#: A mount was lazily detached: data not yet written to the device may have been lost.
LAZY_DETACH = "244d81cb9cdc44f09ad45d0d4c8386f4"
#: An action was planned but not executed (``--dry-run``).
DRY_RUN = "61414964adf24921835b70dcf6c787b0"

ALL: dict[str, str] = {
    "action-ok": ACTION_OK,
    "action-failed": ACTION_FAILED,
    "action-skipped": ACTION_SKIPPED,
    "mounted": MOUNTED,
    "unmounted": UNMOUNTED,
    "lazy-detach": LAZY_DETACH,
    "dry-run": DRY_RUN,
}
