"""Generate the nvme-agent.policy(5) man page (roff) from the policy language's tables.

Every key, its shape, default and meaning come from :mod:`nvme_agent.policy.spec` (the same
declarations the validator and ``schema.json`` are derived from); template fields from
:data:`nvme_agent.policy.templates.TEMPLATE_FIELDS`; hook variables from
:data:`nvme_agent.policy.decide.HOOK_ENV`; the loader's bounds from
:class:`nvme_agent.policy.loader.Limits`.  Run ``python3 -m nvme_agent.cli.policyman -o
nvme-agent.policy.5``; ``man -l nvme-agent.policy.5`` shows it.  The date in ``.TH`` comes
from ``SOURCE_DATE_EPOCH`` when set, as for nvme-agent(8).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from nvme_agent import __version__
from nvme_agent.cli import main as cli
from nvme_agent.cli.clidoc import write_output
from nvme_agent.cli.manpage import _date, roff_escape
from nvme_agent.policy.decide import HOOK_ENV
from nvme_agent.policy.loader import LIMITS
from nvme_agent.policy.shapes import SHAPES
from nvme_agent.policy.spec import (
    ACTION_TYPES,
    Defaults,
    KeyInfo,
    Match,
    Policy,
    Rule,
    Timeouts,
    keys_of,
)
from nvme_agent.policy.templates import HASH_DIGITS, MAX_COMPONENT_BYTES, TEMPLATE_FIELDS

SECTION = 5
NAME = "nvme-agent.policy"

#: A small policy for the EXAMPLE section; a test loads it.
EXAMPLE = """\
version: 1
defaults:
  mount_root: /run/media/nvme-agent
rules:
  - name: system
    match: {fs_label: [rootfs, "EFI*"]}
    ignore: true
  - name: data
    match: {fs_type: [ext4, xfs], fs_label: "data-*", partition: false}
    on_add:
      - mount: {path: "/run/media/nvme-agent/{label}"}
      - systemd: {start: "app@{label}.service"}
    on_remove:
      - systemd: {stop: "app@{label}.service"}
    on_resize:
      - grow: {}
"""


def _default(info: KeyInfo) -> str | None:
    if info.default_text:
        return info.default_text
    if not info.has_default or info.default is None or info.default == ():
        return None
    value: Any = info.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _key(info: KeyInfo) -> list[str]:
    """One key: ``.TP``, the key and its shape, then its meaning."""
    shape = SHAPES[info.shape].text
    head = f"\\fB{roff_escape(info.name)}\\fR (\\fI{roff_escape(shape)}\\fR"
    if info.required:
        head += "; required"
    default = _default(info)
    if default is not None:
        head += f"; default \\fB{roff_escape(default)}\\fR"
    text = info.doc
    if info.casefold:
        text += "  Matched regardless of case."
    return [".TP", head + ")", roff_escape(text)]


def _keys(cls: type) -> list[str]:
    out: list[str] = []
    for info in keys_of(cls):
        out += _key(info)
    return out


def _para(text: str) -> list[str]:
    return [".PP", roff_escape(text)]


def _actions() -> list[str]:
    out = _para(
        "Each action is a mapping with exactly one key, the action's kind.  Actions of a plan "
        "run in order; a failed action skips the rest of its plan, except an unmount in a "
        "removal plan.  Every action has a timeout and is logged with its outcome."
    )
    for cls in ACTION_TYPES:
        klass: type = cls
        out += [f'.SS "{cls.KIND}"', *_para(f"{cls.SUMMARY}  Allowed in {', '.join(cls.HOOKS)}.")]
        if cls.ONE_OF:
            out += _para(f"Exactly one of {', '.join(cls.ONE_OF)}.")
        out += _keys(klass)
    return out


def _templates() -> list[str]:
    out = _para(
        "Paths, arguments, environment values and unit names may contain {field}.  Every "
        "value from a device becomes one safe path component before it is inserted: / and \\ "
        "become _, control and format characters are removed, a leading - becomes _, . and "
        ".. are never produced, and an empty value becomes ns<NSID> (ns<NSID>p<PARTN> for a "
        f"partition).  A value longer than {MAX_COMPONENT_BYTES} bytes of UTF-8 keeps its "
        f"start and ends in ~ and {HASH_DIGITS} hex digits of its SHA-256, so long values "
        "that differ only at their end (QEMU's WWIDs) stay different.  In exec each value "
        "stays inside its own argument; in unit names values are escaped like systemd-escape. "
        "Attribute or index access, conversions and format specs are load-time errors; "
        "write {{ and }} for braces."
    )
    for name, text in TEMPLATE_FIELDS.items():
        out += [".TP", f"\\fB{{{roff_escape(name)}}}\\fR", roff_escape(text)]
    return out


def _environment() -> list[str]:
    out = _para(
        "An exec hook runs with nothing of the daemon's environment: PATH, LANG, the variables "
        "below that have a value, and the action's env.  When a rule change undoes the rule "
        "that matched before, that rule's hooks see the old rule and the namespace as it was."
    )
    for name, text in HOOK_ENV.items():
        out += [".TP", f"\\fB{roff_escape(name)}\\fR", roff_escape(text)]
    return out


def _loading() -> list[str]:
    return [
        *_para(
            "nvme-agent check FILE reports every problem at once as "
            "FILE:LINE:COLUMN: KEY.PATH: MESSAGE (an unknown key with a did-you-mean).  The "
            "daemon reads the policy at start and on reload (SIGHUP, systemctl reload, "
            "nvme-agent reload); a policy with errors is refused and the old one stays in force."
        ),
        *_para(
            "The file must be owned by root and writable by nobody else, and so must every "
            "directory above it (a sticky directory like /tmp excepted), as sshd's StrictModes "
            "asks of its files: whoever can change the policy controls what root runs.  The "
            "daemon refuses any other file; nvme-agent check validates it and warns that the "
            "daemon would refuse it."
        ),
        *_para(
            f"A policy may have at most {LIMITS.max_bytes} bytes, {LIMITS.max_depth} levels of "
            f"nesting and {LIMITS.max_nodes} nodes, an alias counting as what it stands for; "
            "past a bound loading stops with an error at the line and column where it was "
            "reached.  YAML tags other than the standard scalar types are refused; merge keys "
            "(<<) work, keys given explicitly winning."
        ),
    ]


def _example() -> list[str]:
    return [".PP", ".RS", ".nf", *roff_escape(EXAMPLE.rstrip("\n")).split("\n"), ".fi", ".RE"]


def render(date: str | None = None) -> str:
    """The whole man page as roff text."""
    title = NAME.upper()
    lines: list[str] = [
        '.\\" Generated by nvme_agent.cli.policyman from the policy language; do not edit.',
        f'.TH "{title}" "{SECTION}" "{date or _date()}" "nvme-agent {__version__}" "File Formats"',
        ".SH NAME",
        f"{roff_escape(NAME)} \\- the policy file of nvme\\-agent(8)",
        ".SH SYNOPSIS",
        f"\\fI{roff_escape(cli.DEFAULT_POLICY)}\\fR",
        ".SH DESCRIPTION",
        roff_escape(
            "The policy is a YAML file that says what nvme-agent does when an NVMe namespace "
            "or partition appears, goes or grows, or a namespace gains or loses a path: mount "
            "or unmount it, run hooks, start or stop systemd units, send signals.  Every change "
            "is logged to the journal and published on the event stream whatever the policy "
            "says.  A filesystem is never mounted twice: a mount of a filesystem UUID that "
            "another namespace or partition present carries is refused (a device that appears "
            "next to it loses; at start, the one the kernel created first, by DISKSEQ, keeps it)."
        ),
        *_para(Policy.SUMMARY),
        *_keys(Policy),
        ".SH DEFAULTS",
        roff_escape(Defaults.SUMMARY),
        *_keys(Defaults),
        ".SH TIMEOUTS",
        roff_escape(Timeouts.SUMMARY),
        *_keys(Timeouts),
        ".SH RULES",
        roff_escape(Rule.SUMMARY),
        *_keys(Rule),
        ".SH MATCH",
        roff_escape(Match.SUMMARY),
        *_keys(Match),
        ".SH ACTIONS",
        *_actions(),
        ".SH TEMPLATES",
        *_templates(),
        ".SH HOOK ENVIRONMENT",
        *_environment(),
        ".SH LOADING",
        *_loading(),
        ".SH EXAMPLE",
        *_example(),
        ".SH FILES",
        ".TP",
        f"\\fI{roff_escape(cli.DEFAULT_POLICY)}\\fR",
        "The policy the daemon reads.",
        ".TP",
        "\\fI/usr/share/nvme\\-agent/schema.json\\fR",
        roff_escape(
            "The JSON Schema of this format, for editors (nvme-agent check --print-schema "
            "prints it)."
        ),
        ".SH SEE ALSO",
        ".BR nvme\\-agent (8),",
        ".BR systemd\\-escape (1),",
        ".BR glob (7)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m nvme_agent.cli.policyman [-o FILE]``: write the man page."""
    ap = argparse.ArgumentParser(
        prog="python3 -m nvme_agent.cli.policyman",
        description="Write the nvme-agent.policy(5) man page.",
    )
    ap.add_argument("-o", "--output", help="output file (default: standard output)")
    ap.add_argument("--date", help="date for the page header (default: SOURCE_DATE_EPOCH/today)")
    args = ap.parse_args(argv)
    write_output(render(date=args.date), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
