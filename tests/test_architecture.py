"""The import direction of ARCHITECTURE.md: a lower layer never imports a higher one.

Imports are read with ``ast`` (module level, inside functions, and ``importlib.import_module``
with a constant name), so a lazy import cannot hide a wrong-way dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "nvme_agent"

#: Lowest first.  The pipeline (topology -> policy -> actions -> outputs) and what drives it.
LAYERS = ("topology", "policy", "actions", "outputs", "service", "harness", "cli")
#: Package-level files: ``__init__`` (the version) and ``heap`` are below everything,
#: ``__main__`` above.
ROOT_LAYER = {"__init__": -1, "heap": -1, "__main__": len(LAYERS)}


def layer_of(module: str) -> int:
    """Layer index of a dotted ``nvme_agent...`` name (or a path's parts joined by dots)."""
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # "nvme_agent" itself: the version
    head = parts[1]
    if head in LAYERS:
        return LAYERS.index(head)
    if head in ROOT_LAYER:
        return ROOT_LAYER[head]
    raise AssertionError(f"{module}: not in any layer of ARCHITECTURE.md; add it there")


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) for every ``nvme_agent`` import in ``source``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "nvme_agent":  # a subpackage, or the version
                found += [
                    (node.lineno, f"nvme_agent.{a.name}" if a.name in LAYERS else "nvme_agent")
                    for a in node.names
                ]
            elif node.module.startswith("nvme_agent."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("nvme_agent")]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant | ast.JoinedStr)
        ):
            arg = node.args[0]
            text = arg.value if isinstance(arg, ast.Constant) else _fstring_prefix(arg)
            if isinstance(text, str) and text.startswith("nvme_agent"):
                found.append((node.lineno, text.rstrip(".")))
    return found


def _fstring_prefix(node: ast.JoinedStr) -> str:
    first = node.values[0] if node.values else None
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""


def violations(module: str, source: str) -> list[str]:
    """Wrong-way imports of ``module`` (dotted name) whose text is ``source``."""
    own = layer_of(module)
    out = []
    for line, target in imported_modules(source):
        if layer_of(target) > own:
            out.append(f"{module}:{line} imports {target} (a higher layer)")
    return out


def package_modules() -> list[tuple[str, Path]]:
    mods = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        mods.append((".".join(rel.parts), path))
    return mods


def test_no_lower_layer_imports_a_higher_one() -> None:
    problems: list[str] = []
    for module, path in package_modules():
        problems += violations(module, path.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_every_package_is_in_a_layer() -> None:
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages == set(LAYERS)


def test_the_checker_sees_every_import_form() -> None:
    source = (
        "import nvme_agent.cli.main\n"
        "from nvme_agent.service import control\n"
        "def f():\n"
        "    from nvme_agent.harness.bed import Bed\n"
        "    importlib.import_module('nvme_agent.outputs.journal')\n"
        "    importlib.import_module(f'nvme_agent.cli.commands.{name}')\n"
        "from nvme_agent.topology.model import Namespace\n"
    )
    found = violations("nvme_agent.policy.decide", source)
    assert [v.split(" imports ")[1].split()[0] for v in found] == [
        "nvme_agent.cli.main",
        "nvme_agent.service",
        "nvme_agent.harness.bed",
        "nvme_agent.outputs.journal",
        "nvme_agent.cli.commands",
    ]


def test_architecture_document_lists_the_layers_in_order() -> None:
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    positions = [text.index(f"`nvme_agent/{name}/`") for name in LAYERS]
    assert positions == sorted(positions)
