"""Generate bash and zsh completion for nvme-agent from the argparse tree.

``python3 -m nvme_agent.cli.completion --shell bash -o nvme-agent`` writes the script for
``/usr/share/bash-completion/completions/``; ``--shell zsh -o _nvme-agent`` the one for
``/usr/share/zsh/vendor-completions/``.  Both are generated when the package is built, so
completion needs no Python at all.  They complete subcommands, options, the ``choices`` of a
value, and what :class:`~nvme_agent.cli.clidoc.Completion` hints ask for: NVMe block devices,
namespace IDs and controllers present now (cheap globs of ``/dev`` and ``/sys``, no command
run), bundled scenario names, directories, file names, or nothing (numbers).  One level of
subcommands, which is what :mod:`nvme_agent.cli.main` has.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Sequence

from nvme_agent.cli import main as cli
from nvme_agent.cli import scenarios
from nvme_agent.cli.clidoc import CommandDoc, Completion, OptionDoc, describe, write_output

SHELLS = ("bash", "zsh")
INSTALL_PATHS = {
    "bash": "/usr/share/bash-completion/completions/nvme-agent",
    "zsh": "/usr/share/zsh/vendor-completions/_nvme-agent",
}


def _function_name(prog: str) -> str:
    return "_" + re.sub(r"\W", "_", prog)


def _words(items: Sequence[str]) -> str:
    return shlex.quote(" ".join(items))


def _value_kind(opt: OptionDoc) -> str:
    """How a value is completed: ``words`` (its choices) or a :class:`Completion` value."""
    return "words" if opt.choices else opt.complete.value


# --- bash ------------------------------------------------------------------------------------

# Reads only /dev and /sys (no command that could hang on a dead device).  Names of present
# devices are kernel names (nvme0n1, nvme0): safe to offer as words.
_BASH_VALUES = r"""
{values}() {{
    # COMPREPLY for a value of kind $1 (words: $2) matching the current word $3.
    local kind="$1" words="$2" cur="$3" d f n
    local -a found=()
    case "$kind" in
        words) mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur") ;;
        nvme-device)
            for d in /dev/nvme[0-9]*n[0-9]*; do [ -b "$d" ] && found+=("$d"); done
            mapfile -t COMPREPLY < <(compgen -W "${{found[*]}}" -- "$cur") ;;
        nvme-nsid)
            # The hidden per-path disks (nvmeXcYnZ) repeat their head's NSID: sort -u.
            for f in /sys/class/block/nvme[0-9]*n[0-9]*/nsid; do
                read -r n 2>/dev/null < "$f" && found+=("$n")
            done
            words=$(printf '%s\n' "${{found[@]}}" | sort -un)
            mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur") ;;
        nvme-ctrl)
            for d in /sys/class/nvme/nvme[0-9]*; do [ -e "$d" ] && found+=("${{d##*/}}"); done
            mapfile -t COMPREPLY < <(compgen -W "${{found[*]}}" -- "$cur") ;;
        scenario)
            mapfile -t COMPREPLY < <(compgen -W {scenarios} -- "$cur"; compgen -f -- "$cur") ;;
        directory) mapfile -t COMPREPLY < <(compgen -d -- "$cur") ;;
        none) COMPREPLY=() ;;
        *) mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
    esac
}}
"""


def _bash_command_case(cmd: CommandDoc, key: str) -> list[str]:
    """Case arm for one command: its options, the ones taking a value, its positional."""
    flags = [flag for opt in cmd.options for flag in opt.flags]
    value_flags = [flag for opt in cmd.options if opt.takes_value for flag in opt.flags]
    positionals = [opt for opt in cmd.options if opt.positional]
    poskind, poswords = ("none", "")
    if positionals:
        poskind = _value_kind(positionals[0])
        poswords = " ".join(positionals[0].choices)
    return [
        f"        {shlex.quote(key)})",
        f"            opts={_words(flags)}",
        f"            valopts={_words(value_flags)}",
        f"            poskind={shlex.quote(poskind)} poswords={shlex.quote(poswords)}",
        "            ;;",
    ]


def _bash_value_cases(cmd: CommandDoc, key: str) -> list[str]:
    arms: list[str] = []
    for opt in cmd.options:
        if opt.flags and opt.takes_value:
            patterns = "|".join(shlex.quote(f"{key}:{flag}") for flag in opt.flags)
            kind, words = _value_kind(opt), " ".join(opt.choices)
            arms.append(
                f"            {patterns}) kind={shlex.quote(kind)} words={shlex.quote(words)} ;;"
            )
    return arms


def render_bash(parser: argparse.ArgumentParser | None = None) -> str:
    """The bash completion script."""
    top = describe(parser if parser is not None else cli.build_parser())
    func = _function_name(top.name)
    values = f"{func}_values"
    subs = [sub.path[-1] for sub in top.subcommands]
    commands = [top, *top.subcommands]
    keys = ["", *subs]
    cases = [line for c, k in zip(commands, keys, strict=True) for line in _bash_command_case(c, k)]
    value_cases = [
        line for c, k in zip(commands, keys, strict=True) for line in _bash_value_cases(c, k)
    ]
    lines = [
        f"# bash completion for {top.name}",
        "# Generated by nvme_agent.cli.completion from the argparse definitions; do not edit.",
        _BASH_VALUES.format(values=values, scenarios=_words(list(scenarios.bundled()))).strip(),
        "",
        f"{func}() {{",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" cmd="" i word',
        '    [ "$COMP_CWORD" -gt 0 ] && prev="${COMP_WORDS[COMP_CWORD-1]}"',
        f"    local subs={_words(subs)}",
        '    local opts="" valopts="" poskind="" poswords="" kind="" words=""',
        "    # The subcommand is the first word before the cursor that names one.",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        word="${COMP_WORDS[i]}"',
        '        case " $subs " in *" $word "*) cmd="$word"; break ;; esac',
        "    done",
        '    case "$cmd" in',
        *cases,
        "    esac",
        '    case " $valopts " in',
        '        *" $prev "*)',
        '            case "$cmd:$prev" in',
        *value_cases,
        "            esac",
        f'            {values} "$kind" "$words" "$cur"',
        "            return 0",
        "            ;;",
        "    esac",
        '    if [[ "$cur" == -* ]]; then',
        '        mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$cur")',
        '    elif [ -z "$cmd" ]; then',
        '        mapfile -t COMPREPLY < <(compgen -W "$subs" -- "$cur")',
        "    else",
        f'        {values} "$poskind" "$poswords" "$cur"',
        "    fi",
        "    return 0",
        "}",
        f"complete -o filenames -F {func} {top.name}",
    ]
    return "\n".join(lines) + "\n"


# --- zsh -------------------------------------------------------------------------------------

_ZSH_HELPERS = r"""
{func}_devices() {{
    local -a found; local d
    for d in /dev/nvme[0-9]*n[0-9]*(N); do [[ -b $d ]] && found+=($d); done
    _wanted devices expl 'NVMe block device' compadd -a found
}}

{func}_nsids() {{
    local -a found; local f n
    for f in /sys/class/block/nvme[0-9]*n[0-9]*/nsid(N); do
        {{ read -r n < $f }} 2>/dev/null && found+=($n)
    done
    _wanted nsids expl 'namespace ID' compadd -- ${{(nu)found}}
}}

{func}_ctrls() {{
    local -a found
    found=(/sys/class/nvme/nvme[0-9]*(N:t))
    _wanted controllers expl 'NVMe controller' compadd -a found
}}

{func}_scenarios() {{
    _alternative 'scenarios:bundled scenario:({scenarios})' 'files:scenario file:_files'
}}
"""

_ZSH_ACTIONS = {
    Completion.FILE: "_files",
    Completion.DIRECTORY: "_files -/",
    Completion.NONE: " ",
    Completion.DEVICE: "{func}_devices",
    Completion.NSID: "{func}_nsids",
    Completion.CTRL: "{func}_ctrls",
    Completion.SCENARIO: "{func}_scenarios",
}


def _zsh_escape(text: str) -> str:
    """Text for inside an _arguments spec's ``[...]`` or ``:...:`` (then single-quoted)."""
    first = re.split(r"(?<=[.;])\s|\s\(", " ".join(text.split()), maxsplit=1)[0]
    escaped = re.sub(r"([\\\[\]:])", r"\\\1", first.rstrip("."))
    return escaped.replace("'", "'\\''")


def _zsh_action(opt: OptionDoc, func: str) -> str:
    if opt.choices:
        return "(" + " ".join(shlex.quote(c) for c in opt.choices) + ")"
    return _ZSH_ACTIONS[opt.complete].format(func=func)


def _zsh_specs(cmd: CommandDoc, func: str) -> list[str]:
    specs: list[str] = []
    for opt in cmd.options:
        help_text = _zsh_escape(opt.help)
        if opt.positional:
            repeat = "*" if "..." in opt.args else ""
            optional = ":" if opt.args.startswith("[") and not repeat else ""
            name = _zsh_escape(opt.args.strip("[]. ").lower() or opt.dest)
            specs.append(f"'{repeat}{optional}:{name}:{_zsh_action(opt, func)}'")
            continue
        value = ""
        if opt.takes_value:
            name = opt.dest if opt.choices else opt.args.lower()
            value = f":{_zsh_escape(name) or 'value'}:{_zsh_action(opt, func)}"
        # -v may be repeated; the others are offered once, and -n hides --limit.
        if opt.dest == "verbose":
            prefix = "*"
        elif len(opt.flags) > 1:
            prefix = "(" + " ".join(opt.flags) + ")"
        else:
            prefix = ""
        for flag in opt.flags:
            specs.append(f"'{prefix}{flag}[{help_text}]{value}'")
    return specs


def _zsh_arguments(specs: list[str], indent: str, *extra: str) -> list[str]:
    items = [*specs, *extra]
    out = [f"{indent}_arguments -s -S \\"]
    out += [f"{indent}    {item} \\" for item in items[:-1]]
    out += [f"{indent}    {items[-1]} && ret=0"] if items else []
    return out


def render_zsh(parser: argparse.ArgumentParser | None = None) -> str:
    """The zsh completion function file (``#compdef``)."""
    top = describe(parser if parser is not None else cli.build_parser())
    func = _function_name(top.name)
    described = [
        f"        {shlex.quote(sub.path[-1] + ':' + ' '.join(sub.summary.split()))}"
        for sub in top.subcommands
    ]
    lines = [
        f"#compdef {top.name}",
        f"# zsh completion for {top.name}",
        "# Generated by nvme_agent.cli.completion from the argparse definitions; do not edit.",
        _ZSH_HELPERS.format(func=func, scenarios=" ".join(scenarios.bundled())).rstrip(),
        "",
        f"{func}() {{",
        '    local curcontext="$curcontext" state line expl ret=1',
        "    typeset -A opt_args",
        *_zsh_arguments(
            _zsh_specs(top, func), "    ", "'1:subcommand:->command'", "'*::argument:->argument'"
        ),
        "    case $state in",
        "        command)",
        "            local -a commands",
        "            commands=(",
        *[f"    {item}" for item in described],
        "            )",
        "            _describe -t commands 'nvme-agent subcommand' commands && ret=0",
        "            ;;",
        "        argument)",
        '            curcontext="${curcontext%:*:*}:nvme-agent-$words[1]:"',
        "            case $words[1] in",
    ]
    for sub in top.subcommands:
        lines.append(f"                {sub.path[-1]})")
        lines += _zsh_arguments(_zsh_specs(sub, func), "                    ")
        lines.append("                    ;;")
    lines += [
        "            esac",
        "            ;;",
        "    esac",
        "    return ret",
        "}",
        "",
        f'{func} "$@"',
    ]
    return "\n".join(lines) + "\n"


RENDERERS = {"bash": render_bash, "zsh": render_zsh}


def render(parser: argparse.ArgumentParser | None = None, shell: str = "bash") -> str:
    """The completion script for ``shell``."""
    return RENDERERS[shell](parser)


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m nvme_agent.cli.completion [--shell SHELL] [-o FILE]``."""
    ap = argparse.ArgumentParser(
        prog="python3 -m nvme_agent.cli.completion",
        description="Write the bash or zsh completion script for nvme-agent.",
    )
    ap.add_argument("--shell", choices=SHELLS, default="bash", help="default: bash")
    ap.add_argument("-o", "--output", help="output file (default: standard output)")
    args = ap.parse_args(argv)
    write_output(render(shell=args.shell), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
