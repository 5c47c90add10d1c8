"""A plain description of the argparse tree, for generated documentation.

:func:`describe` walks a parser built by :func:`nvme_agent.cli.main.build_parser` and returns
value objects (commands, option groups, options) that the man page
(:mod:`nvme_agent.cli.manpage`) and the shell completion (:mod:`nvme_agent.cli.completion`) render.
The parser stays the only source of truth; nothing here knows the subcommand names.

argparse keeps its tree in underscore attributes (``_actions``, ``_action_groups``...);
they have been stable since Python 3.2 and typeshed types them, so reading them is the
price of not keeping a second copy of the CLI.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from enum import StrEnum


class Completion(StrEnum):
    """What the shell completes for a value, when it is not a fixed list of choices."""

    FILE = "file"
    DIRECTORY = "directory"
    NONE = "none"  # a number or free text: nothing to offer
    DEVICE = "nvme-device"  # /dev/nvmeXnY block devices present now
    NSID = "nvme-nsid"  # namespace IDs present now (sysfs ``nsid``)
    CTRL = "nvme-ctrl"  # controller names present now (/sys/class/nvme)
    SCENARIO = "scenario"  # bundled scenario names, and files


#: The attribute :func:`hint` sets on an argparse action.
_HINT = "nvme_agent_completion"


def hint(action: argparse.Action, kind: Completion) -> argparse.Action:
    """Tell the generated completions what ``action``'s value is (argparse has no field)."""
    setattr(action, _HINT, kind)
    return action


@dataclass(frozen=True, slots=True)
class OptionDoc:
    """One option or positional argument.

    ``flags`` is empty for a positional; ``args`` is how its value is written in usage
    (``FILE``, ``[NSID ...]``, ``{a,b}``), empty for flags that take no value.
    """

    flags: tuple[str, ...]
    dest: str
    args: str
    help: str
    choices: tuple[str, ...] = ()
    required: bool = False
    complete: Completion = Completion.FILE

    @property
    def positional(self) -> bool:
        """True for a positional argument."""
        return not self.flags

    @property
    def takes_value(self) -> bool:
        """True when the option is followed by a value on the command line."""
        return bool(self.args)


@dataclass(frozen=True, slots=True)
class GroupDoc:
    """A titled argparse argument group and its visible options."""

    title: str
    description: str
    options: tuple[OptionDoc, ...]


@dataclass(frozen=True, slots=True)
class CommandDoc:
    """A parser: the program itself or one (possibly nested) subcommand."""

    path: tuple[str, ...]
    summary: str
    description: str
    epilog: str
    groups: tuple[GroupDoc, ...]
    subcommands: tuple[CommandDoc, ...] = ()

    @property
    def name(self) -> str:
        """The command line prefix, e.g. ``nvme-agent run``."""
        return " ".join(self.path)

    @property
    def options(self) -> tuple[OptionDoc, ...]:
        """All visible options and positionals, in group order."""
        return tuple(opt for group in self.groups for opt in group.options)

    def walk(self) -> list[CommandDoc]:
        """This command and every subcommand below it, depth first."""
        found = [self]
        for sub in self.subcommands:
            found.extend(sub.walk())
        return found


def describe(parser: argparse.ArgumentParser, summary: str = "") -> CommandDoc:
    """Describe ``parser`` and, recursively, its subcommands."""
    return _describe(parser, (parser.prog,), summary)


def _describe(parser: argparse.ArgumentParser, path: tuple[str, ...], summary: str) -> CommandDoc:
    formatter = parser._get_formatter()
    groups: list[GroupDoc] = []
    subcommands: list[CommandDoc] = []
    for group in parser._action_groups:
        options: list[OptionDoc] = []
        for action in group._group_actions:
            if isinstance(action, argparse._SubParsersAction):
                subcommands.extend(_describe_subparsers(action, path))
                continue
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            options.append(_describe_action(formatter, action))
        if options:
            groups.append(
                GroupDoc(
                    title=group.title or "",
                    description=group.description or "",
                    options=tuple(options),
                )
            )
    return CommandDoc(
        path=path,
        summary=summary,
        description=parser.description or "",
        epilog=parser.epilog or "",
        groups=tuple(groups),
        subcommands=tuple(subcommands),
    )


def _describe_subparsers(
    action: argparse._SubParsersAction[argparse.ArgumentParser], path: tuple[str, ...]
) -> list[CommandDoc]:
    # ``_choices_actions`` holds one pseudo-action per add_parser(help=...), in order;
    # parsers added without help= (hidden) have none and stay undocumented.
    helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
    docs: list[CommandDoc] = []
    seen: set[int] = set()
    for name, subparser in action.choices.items():
        if id(subparser) in seen or name not in helps:
            continue  # an alias of a parser already described, or a hidden one
        seen.add(id(subparser))
        docs.append(_describe(subparser, (*path, name), helps[name]))
    return docs


def _describe_action(formatter: argparse.HelpFormatter, action: argparse.Action) -> OptionDoc:
    if action.option_strings:
        # nargs=0 actions (store_true, count, version...) take no value.
        args = (
            formatter._format_args(action, formatter._get_default_metavar_for_optional(action))
            if action.nargs != 0
            else ""
        )
    else:
        args = formatter._format_args(action, formatter._get_default_metavar_for_positional(action))
    choices = tuple(str(c) for c in action.choices) if action.choices is not None else ()
    return OptionDoc(
        flags=tuple(action.option_strings),
        dest=action.dest,
        args=args,
        help=formatter._expand_help(action) if action.help else "",
        choices=choices,
        required=bool(action.required),
        complete=_completion(action),
    )


def _completion(action: argparse.Action) -> Completion:
    hinted = getattr(action, _HINT, None)
    if isinstance(hinted, Completion):
        return hinted
    # Numbers are never file names; everything else without a hint may be one.
    if action.type in (int, float):
        return Completion.NONE
    return Completion.FILE


def write_output(text: str, output: str | None) -> None:
    """Write a generated document to ``output``, or to standard output when it is None."""
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
