"""``nvme-agent check [POLICY]``: validate a policy file and report every problem at once."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nvme_agent.cli.commands.common import with_exits
from nvme_agent.cli.exits import Exit, error_for_os
from nvme_agent.cli.main import DEFAULT_POLICY
from nvme_agent.cli.output import Reporter
from nvme_agent.policy import PolicyError, PolicyIssue, load_policy, schema_text

EXITS = {
    Exit.OK: "valid (warnings allowed)",
    Exit.FAILED: "invalid",
    Exit.USAGE: "usage error or the file cannot be read",
    Exit.DENIED: "the file is not readable by you",
}


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "check",
        help="validate a policy file",
        description=with_exits(
            "Validate a policy file: YAML syntax, the schema (unknown keys, wrong types), and "
            "meaning (globs, size units, absolute paths, signal names, templates, mount paths "
            "below mount_root).  Every error is reported as FILE:LINE:COLUMN: KEY.PATH: MESSAGE. "
            "A file the daemon would refuse (not owned by root, or writable by others) is "
            "validated all the same, with a warning.",
            EXITS,
        ),
    )
    p.add_argument(
        "policy",
        nargs="?",
        default=DEFAULT_POLICY,
        metavar="POLICY",
        help=f"policy file to check (default: {DEFAULT_POLICY})",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="JSON lines: one 'policy-issue' object per problem, then one 'policy-check' summary",
    )
    p.add_argument(
        "--print-schema",
        action="store_true",
        help="print the policy's JSON Schema (for editors) and exit",
    )
    p.set_defaults(func=run)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def run(args: argparse.Namespace) -> int:
    if args.print_schema:
        sys.stdout.write(schema_text())
        return Exit.OK
    out = Reporter(args.json)
    issues: list[PolicyIssue]
    try:
        # A file the daemon would refuse (not root's, or writable by others) is still
        # validated; the refusal is one of the warnings.
        policy = load_policy(args.policy, require_trusted=False)
    except OSError as exc:
        raise error_for_os(exc, args.policy) from exc
    except PolicyError as exc:
        issues = exc.issues
        valid, rules = False, 0
    else:
        issues = list(policy.warnings)
        valid, rules = True, len(policy.rules)
    errors = sum(1 for i in issues if i.severity == "error")
    warnings = len(issues) - errors
    for issue in issues:
        out.emit(issue.to_dict(), str(issue))
    parts = [_plural(errors, "error")] if not valid else [_plural(rules, "rule")]
    if warnings or valid:
        parts.append(_plural(warnings, "warning"))
    summary = f"{args.policy}: {'valid' if valid else 'invalid'}, {', '.join(parts)}"
    out.emit(
        {
            "type": "policy-check",
            "nsid": None,
            "file": args.policy,
            "valid": valid,
            "rules": rules,
            "errors": errors,
            "warnings": warnings,
        },
        summary,
    )
    return Exit.OK if valid else Exit.FAILED
