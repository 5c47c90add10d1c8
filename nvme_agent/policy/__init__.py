"""The policy: a YAML file that says what happens when a namespace comes, goes or grows.

Public API (used by the daemon, ``check``, ``explain`` and the harness):

* :func:`load_policy`, :func:`load_policy_text`, :func:`load_policy_mapping` -> :class:`Policy`
  (raise :class:`PolicyError` listing every problem; warnings are on ``Policy.warnings``);
* :func:`decide` -> :class:`~nvme_agent.policy.plan.Plan` (pure);
* :func:`explain` -> list of :class:`RuleVerdict`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from nvme_agent.policy.decide import REFUSED, decide, plan_key
from nvme_agent.policy.errors import PolicyError, PolicyIssue
from nvme_agent.policy.explain import RuleVerdict, explain
from nvme_agent.policy.loader import Document, parse_yaml
from nvme_agent.policy.spec import DEFAULT_MOUNT_ROOT, Defaults, Policy, Rule, Timeouts
from nvme_agent.policy.validate import compile_document

__all__ = [
    "DEFAULT_MOUNT_ROOT",
    "REFUSED",
    "Defaults",
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
    "load_policy_mapping",
    "load_policy_text",
    "plan_key",
    "schema_text",
]


def load_policy_text(text: str, origin: str = "<policy>") -> Policy:
    """Parse and validate YAML ``text``; ``origin`` names it in messages."""
    policy = compile_document(parse_yaml(text, origin))
    return dataclasses.replace(policy, digest=hashlib.sha256(text.encode()).hexdigest())


def load_policy(path: str | Path) -> Policy:
    """Load the policy file at ``path``.

    ``OSError`` (missing or unreadable file) propagates; a file that is not UTF-8 is a
    :class:`PolicyError`.
    """
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        issue = PolicyIssue(str(path), 1, 1, "(file)", f"not UTF-8 text: {exc.reason}")
        raise PolicyError([issue]) from exc
    return load_policy_text(text, str(path))


def load_policy_mapping(mapping: Mapping[str, Any], origin: str = "<mapping>") -> Policy:
    """Validate a policy given as already-parsed data (e.g. inline in a scenario file).

    Issues carry no line/column, only the key path.
    """
    return compile_document(Document(data=dict(mapping), origin=origin))


def schema_text() -> str:
    """The JSON Schema of the policy file, as shipped in the package."""
    return resources.files("nvme_agent.policy").joinpath("schema.json").read_text("utf-8")


def default_policy_text() -> str:
    """The conservative default policy shipped in the package."""
    return resources.files("nvme_agent").joinpath("data/default-policy.yaml").read_text("utf-8")
