"""One readable line per event-stream record, for ``simulate`` and ``replay``.

Device data in a record (names, serials, NQNs, labels) comes from disks and targets nobody
vouches for: a value that is not printable is shown escaped, so it can never start a line of
its own or send terminal control sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nvme_agent.policy.units import format_size
from nvme_agent.topology.changes import ChangeType
from nvme_agent.topology.text import one_line

Record = dict[str, Any]
CHANGE_TYPES = frozenset(t.value for t in ChangeType)


def shown(value: Any) -> str:
    """``value`` as one line of text, its unsafe characters escaped (the one escaping of
    :mod:`nvme_agent.topology.text`)."""
    return one_line(str(value))


def describe_record(rec: Record, specs: list[dict[str, Any]] | None = None) -> str:
    """One timeline line for an event-stream record."""
    kind = str(rec.get("type"))
    if kind in CHANGE_TYPES:
        return _change(rec)
    if kind == "action-result":
        return _result(rec, specs)
    describe = _DESCRIBE.get(kind)
    return describe(rec) if describe is not None else f"{shown(kind)} {shown(rec)}"


def _change(rec: Record) -> str:
    bits = [str(rec.get("type"))]
    ns = rec.get("namespace") or {}
    ctrl = rec.get("controller") or {}
    if ns:
        bits += _namespace_bits(ns, rec.get("partition") or {})
    elif ctrl:
        bits.append(
            f"{shown(ctrl.get('name'))} serial={shown(ctrl.get('serial'))} "
            f"nqn={shown(ctrl.get('subsysnqn'))}"
        )
    if rec.get("reason"):
        bits.append(f"({shown(rec['reason'])})")
    if rec.get("coldplug"):
        bits.append("[coldplug]")
    return " ".join(bits)


def _namespace_bits(ns: Mapping[str, Any], part: Mapping[str, Any]) -> list[str]:
    bits = [f"nsid={ns.get('nsid')} {shown(ns.get('name'))}"]
    if part:
        bits.append(f"partition={shown(part.get('name'))}")
    weak = " (weak)" if ns.get("identity_weak") else ""
    bits.append(f"id={shown(ns.get('identity'))}{weak}")
    fs = (part or ns).get("fs")
    if fs:
        label = f" label={fs['label']!r}" if fs.get("label") else ""
        bits.append(f"fs={shown(fs.get('type'))}{label}")
    if ns.get("size_bytes") is not None:
        bits.append(f"size={format_size(ns['size_bytes'])}")
    if ns.get("devnode"):
        bits.append(f"dev={shown(ns['devnode'])}")
    return bits


def _plan(rec: Record) -> str:
    actions = rec.get("actions") or []
    if rec.get("rule") is None and not actions:
        return "  no rule matched: logged only"
    what = ", ".join(action_text(a) for a in actions) or "no actions"
    return f"  rule {shown(rec.get('rule'))}: {what}"


def _result(rec: Record, specs: list[dict[str, Any]] | None) -> str:
    spec = specs.pop(0) if specs else None
    target = f" {shown(spec.get('target'))}" if spec and spec.get("target") else ""
    msg = rec.get("error") or rec.get("message") or ""
    detail = f" ({shown(msg)})" if msg else ""
    return f"    {rec.get('action')}{target}: {rec.get('status')}{detail}"


def _fields(rec: Record) -> str:
    extra = {k: v for k, v in rec.items() if k not in ("type", "nsid")}
    return f"{rec.get('type')} " + " ".join(f"{k}={shown(v)}" for k, v in extra.items())


_DESCRIBE: Mapping[str, Callable[[Record], str]] = {
    "plan": _plan,
    "reloaded": _fields,
    "reload-failed": _fields,
    "ejected": _fields,
    "ready": _fields,
}


def action_text(spec: dict[str, Any]) -> str:
    """A planned action in a few words."""
    kind = spec.get("kind")
    describe = _ACTIONS.get(str(kind))
    return describe(spec) if describe is not None else shown(kind)


_ACTIONS: Mapping[str, Callable[[dict[str, Any]], str]] = {
    "mount": lambda s: f"mount {shown(s.get('source'))} -> {shown(s.get('target'))}",
    "unmount": lambda s: (
        f"unmount {shown(s.get('source'))}" + (" (device gone)" if s.get("device_gone") else "")
    ),
    "exec": lambda s: "exec " + shown(" ".join(s.get("argv") or [])),
    "systemd": lambda s: f"systemctl {s.get('verb')} {shown(s.get('unit'))}",
    "signal": lambda s: f"signal {s.get('signal')}",
    "grow": lambda s: f"grow {shown(s.get('source'))}",
}
