"""The scenarios shipped in the package, found by name (``simulate --list`` prints them).

``simulate NAME`` and ``explain --scenario NAME`` take a path or a bundled name, with or
without ``.yaml``.  A path that exists wins, so a local file is never shadowed.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from nvme_agent.cli.exits import UsageError

SUFFIX = ".yaml"
#: A scenario's own policy file next to it; not a scenario itself.
POLICY_SUFFIX = ".policy.yaml"
DEFAULT = "qemu-hot-swap"


def bundled() -> dict[str, Path]:
    """Name (without ``.yaml``) -> file, for every scenario in the package, by name."""
    folder = resources.files("nvme_agent").joinpath("data/scenarios")
    found = {
        f.name.removesuffix(SUFFIX): Path(str(f))
        for f in folder.iterdir()
        if f.name.endswith(SUFFIX) and not f.name.endswith(POLICY_SUFFIX)
    }
    return dict(sorted(found.items()))


def resolve(arg: str | None) -> Path:
    """The scenario file for a command-line argument (None: the default scenario)."""
    if arg is None:
        return bundled()[DEFAULT]
    path = Path(arg)
    if path.exists():
        return path
    known = bundled()
    name = arg.removesuffix(SUFFIX)
    if "/" not in arg and name in known:
        return known[name]
    raise UsageError(
        f"no scenario file {arg!r} and no bundled scenario of that name "
        f"(bundled: {', '.join(known) or 'none'})"
    )
