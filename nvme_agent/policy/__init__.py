"""The policy: a YAML file that says what happens when a namespace comes, goes or grows.

Public API (used by the daemon, ``check``, ``explain`` and the harness):

* :func:`load_policy`, :func:`load_policy_bytes`, :func:`load_policy_text`,
  :func:`load_policy_mapping` -> :class:`Policy`: they raise :class:`PolicyError` listing every
  problem (``load_policy`` also ``OSError`` for a file it cannot read) and nothing else,
  whatever the input; warnings are on ``Policy.warnings``.  ``load_policy`` refuses a file
  that anyone but root could change (``require_trusted=False``: a warning instead);
* :func:`decide` -> :class:`~nvme_agent.policy.plan.Plan` (pure);
* :func:`explain` -> list of :class:`RuleVerdict`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nvme_agent.heap import paused_collector
from nvme_agent.policy.decide import REFUSED, decide, plan_key
from nvme_agent.policy.errors import PolicyError, PolicyIssue
from nvme_agent.policy.explain import RuleVerdict, explain
from nvme_agent.policy.files import ROOT_ONLY, NotAPolicyFile, distrust, read_policy_file
from nvme_agent.policy.loader import LIMITS, Document, Limits, parse_yaml
from nvme_agent.policy.spec import DEFAULT_MOUNT_ROOT, Defaults, Policy, Rule, Timeouts
from nvme_agent.policy.validate import compile_document

__all__ = [
    "DEFAULT_MOUNT_ROOT",
    "LIMITS",
    "REFUSED",
    "Defaults",
    "Limits",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "Rule",
    "RuleVerdict",
    "Timeouts",
    "decide",
    "default_policy_text",
    "explain",
    "load_policy",
    "load_policy_bytes",
    "load_policy_mapping",
    "load_policy_text",
    "plan_key",
    "schema_text",
]


def load_policy_text(text: str, origin: str = "<policy>", limits: Limits = LIMITS) -> Policy:
    """Parse and validate YAML ``text``; ``origin`` names it in messages.

    Raises only :class:`PolicyError`, whatever the text: the loader is bounded (size, depth,
    nodes, aliases; :class:`Limits`) and reports everything as issues.
    """
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    try:
        # What a load builds holds no cycles (aliases are copied) and Limits bounds it: a
        # collection meanwhile would walk the daemon's heap for nothing (nvme_agent.heap).
        with paused_collector():
            return compile_document(parse_yaml(text, origin, limits), digest)
    except (RecursionError, MemoryError) as exc:
        # Defence in depth: the bounds keep both out of reach; a daemon must survive anyway.
        raise PolicyError(
            [PolicyIssue(origin, 1, 1, "(file)", f"too large to load ({type(exc).__name__})")]
        ) from exc


def load_policy_bytes(raw: bytes, origin: str = "<policy>", limits: Limits = LIMITS) -> Policy:
    """:func:`load_policy_text` of ``raw``, which must be UTF-8 text.  Raises only
    :class:`PolicyError`."""
    if len(raw) > limits.max_bytes:
        message = f"{len(raw)} bytes is more than the {limits.max_bytes} a policy may have"
        raise PolicyError([PolicyIssue(origin, 1, 1, "(file)", message)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8", "replace")
        line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        issue = PolicyIssue(origin, line, col, "(file)", f"not UTF-8 text: {exc.reason}")
        raise PolicyError([issue]) from exc
    return load_policy_text(text, origin, limits)


def load_policy(
    path: str | Path, *, require_trusted: bool = True, limits: Limits = LIMITS
) -> Policy:
    """Load the policy file at ``path``.

    Raises ``OSError`` (missing or unreadable file) or :class:`PolicyError` (anything else).
    ``require_trusted``: refuse a file that anyone but root (or this process's user) could
    have changed, as the daemon does; without it (``nvme-agent check``) such a file is
    validated, with a warning that the daemon would refuse it.
    """
    origin = str(path)
    try:
        read = read_policy_file(origin, limits.max_bytes)
    except NotAPolicyFile as exc:
        raise PolicyError([PolicyIssue(origin, 1, 1, "(file)", str(exc))]) from exc
    if require_trusted:
        reason = distrust(read)
        if reason is not None:
            raise PolicyError([PolicyIssue(origin, 1, 1, "(file)", _refusal(reason))])
        return load_policy_bytes(read.data, origin, limits)
    reason = distrust(read, ROOT_ONLY)
    warnings = [] if reason is None else [_would_refuse(origin, reason)]
    try:
        policy = load_policy_bytes(read.data, origin, limits)
    except PolicyError as exc:
        raise PolicyError([*warnings, *exc.issues]) from exc
    return dataclasses.replace(policy, warnings=(*warnings, *policy.warnings))


def _refusal(reason: str) -> str:
    return (
        f"refused: {reason}; the policy file and every directory above it must belong to "
        "root and be writable by nobody else"
    )


def _would_refuse(origin: str, reason: str) -> PolicyIssue:
    message = f"the daemon (root) would refuse this file: {reason}"
    return PolicyIssue(origin, 1, 1, "(file)", message, "warning")


def load_policy_mapping(mapping: Mapping[str, Any], origin: str = "<mapping>") -> Policy:
    """Validate a policy given as already-parsed data (e.g. inline in a scenario file).

    Issues carry no line/column, only the key path.  Raises only :class:`PolicyError`.
    """
    try:
        return compile_document(Document(data=dict(mapping), origin=origin))
    except (RecursionError, MemoryError) as exc:
        issue = PolicyIssue(origin, None, None, "(file)", f"too large ({type(exc).__name__})")
        raise PolicyError([issue]) from exc


def schema_text() -> str:
    """The JSON Schema of the policy file, as shipped in the package."""
    # Imported here: importlib.resources pulls in tempfile, shutil and the compressors, which
    # a daemon never needs (issue 13, RSS).
    from importlib import resources

    return resources.files("nvme_agent.policy").joinpath("schema.json").read_text("utf-8")


def default_policy_text() -> str:
    """The conservative default policy shipped in the package."""
    from importlib import resources  # see schema_text

    return resources.files("nvme_agent").joinpath("data/default-policy.yaml").read_text("utf-8")
