"""Judging a scenario's ``expect`` steps from the daemon's event stream (and, in real mode,
from ``/proc/self/mountinfo``).

Action results carry the plan key, not the target; the target comes from the plan's action
specs, which the runner executes in order per key.  So results are paired with specs by
replaying plans and results in stream order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nvme_agent.harness.scenario import Step

Record = dict[str, Any]
DONE = ("ok", "dry-run")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: str


@dataclass(frozen=True)
class Done:
    """One action result with the spec it executed."""

    nsid: int | None
    action: str
    status: str
    spec: dict[str, Any]
    record: Record


def executed(records: list[Record]) -> list[Done]:
    """Action results paired with their specs, in stream order."""
    queues: dict[str, list[dict[str, Any]]] = {}
    out: list[Done] = []
    for rec in records:
        if rec.get("type") == "plan":
            queues.setdefault(str(rec.get("key")), []).extend(rec.get("actions") or [])
        elif rec.get("type") == "action-result":
            queue = queues.get(str(rec.get("key")), [])
            spec = queue.pop(0) if queue else {}
            out.append(
                Done(rec.get("nsid"), str(rec.get("action")), str(rec.get("status")), spec, rec)
            )
    return out


def mounted_targets(path: str = "/proc/self/mountinfo") -> set[str]:
    """Mount points currently in the mount table (octal escapes decoded)."""
    targets: set[str] = set()
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4:
                    targets.add(_unescape(fields[4]))
    except OSError:
        pass
    return targets


def _unescape(text: str) -> str:
    out, i = "", 0
    while i < len(text):
        if text[i] == "\\" and i + 3 < len(text) + 0 and text[i + 1 : i + 4].isdigit():
            out += chr(int(text[i + 1 : i + 4], 8))
            i += 4
        else:
            out += text[i]
            i += 1
    return out


class Expectations:
    """Evaluates ``expect`` steps against what the daemon reported so far."""

    def __init__(
        self,
        feed: Any,
        history: list[Record],
        *,
        real: bool = False,
        real_root: str | None = None,
        mount_root: str = "/run/media/nvme-agent",
        mountinfo: Callable[[], set[str]] = mounted_targets,
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.feed = feed
        self.history = history
        self.real = real
        self.real_root = real_root
        self.mount_root = mount_root
        self.mountinfo = mountinfo
        self.status = status

    def _records(self) -> list[Record]:
        records: list[Record] = self.feed.snapshot()
        return records

    def _path(self, at: str) -> str:
        if self.real and self.real_root:
            old = self.mount_root.rstrip("/")
            if at == old or at.startswith(old + "/"):
                return self.real_root.rstrip("/") + at[len(old) :]
        return at

    def check(self, step: Step) -> Verdict:
        args = dict(step.match)
        judge = _JUDGES.get(str(step.expect))
        if judge is None:
            return Verdict(False, f"unknown expectation {step.expect!r}")
        try:
            return judge(self, args)
        except (TypeError, ValueError) as exc:
            return Verdict(False, f"bad arguments {args}: {exc}")

    def _mount_state(self, nsid: int) -> tuple[Done | None, list[str]]:
        last: Done | None = None
        targets: list[str] = []
        for done in executed(self._records()):
            if done.nsid != nsid or done.action not in ("mount", "unmount"):
                continue
            if done.status in DONE:
                last = done
                if done.action == "mount" and done.spec.get("target"):
                    targets.append(str(done.spec["target"]))
        return last, targets

    def mounted(self, nsid: int, at: str) -> Verdict:
        target = self._path(at)
        last, _ = self._mount_state(nsid)
        if last is None:
            return Verdict(False, f"no mount of nsid {nsid} was reported")
        if last.action != "mount":
            return Verdict(False, f"nsid {nsid} was unmounted after its last mount")
        got = str(last.spec.get("target"))
        if got != target:
            return Verdict(False, f"nsid {nsid} was mounted at {got}, not {target}")
        if self.real and target not in self.mountinfo():
            return Verdict(False, f"the daemon reported the mount but {target} is not mounted")
        return Verdict(True, f"mount {last.status} at {target}")

    def not_mounted(self, nsid: int) -> Verdict:
        last, targets = self._mount_state(nsid)
        if last is not None and last.action == "mount":
            return Verdict(False, f"nsid {nsid} is mounted at {last.spec.get('target')}")
        if self.real:
            still = sorted(set(targets) & self.mountinfo())
            if still:
                return Verdict(False, f"still in the mount table: {', '.join(still)}")
        if last is None:
            return Verdict(True, f"nsid {nsid} was never mounted")
        return Verdict(True, f"unmount {last.status}")

    def hook_ran(self, args: dict[str, Any]) -> Verdict:
        nsid = args.get("nsid")
        contains = args.get("contains")
        for done in executed(self._records()):
            if done.action != "exec" or done.status not in DONE:
                continue
            if nsid is not None and done.nsid != nsid:
                continue
            argv = " ".join(done.spec.get("argv") or [])
            if contains is not None and str(contains) not in argv:
                continue
            return Verdict(True, f"exec {done.status}: {argv}")
        return Verdict(False, "no hook (exec action) ran" + (f" for nsid {nsid}" if nsid else ""))

    def journal(self, args: dict[str, Any]) -> Verdict:
        for rec in [*self.history, *self._records()]:
            if all(rec.get(k) == v or str(rec.get(k)) == str(v) for k, v in args.items()):
                return Verdict(True, f"{rec.get('type')} recorded")
        return Verdict(False, "no such record on the event stream or in the history")

    def _present(self, args: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        """Namespaces with ``args['nsid']`` in the daemon's status (and why none, if so)."""
        if self.status is None:
            return [], "no daemon status to ask"
        nsid = int(args["nsid"])
        found = [n for n in self.status().get("namespaces", []) if n.get("nsid") == nsid]
        return found, f"the daemon's status lists no namespace with nsid {nsid}"

    def present(self, args: dict[str, Any]) -> Verdict:
        """The daemon still has the namespace (``controllers``: reached through exactly
        those)."""
        found, why = self._present(args)
        if not found:
            return Verdict(False, why)
        want = args.get("controllers")
        if want is not None:
            got = [sorted(n.get("controllers") or []) for n in found]
            if sorted(map(str, want)) not in got:
                return Verdict(False, f"nsid {args['nsid']} is reached through {got}, not {want}")
        devs = ", ".join(str(n.get("devnode")) for n in found)
        return Verdict(True, f"nsid {args['nsid']} present ({devs})")

    def absent(self, args: dict[str, Any]) -> Verdict:
        found, _why = self._present(args)
        if found:
            devs = ", ".join(str(n.get("devnode")) for n in found)
            return Verdict(False, f"nsid {args['nsid']} is still present ({devs})")
        return Verdict(True, f"nsid {args['nsid']} is gone")

    def action(self, args: dict[str, Any]) -> Verdict:
        want_status = args.get("status")
        for done in executed(self._records()):
            if done.action != args["action"]:
                continue
            if "nsid" in args and done.nsid != args["nsid"]:
                continue
            if want_status is None and done.status not in DONE:
                continue
            if want_status is not None and done.status != want_status:
                continue
            return Verdict(True, f"{done.action} {done.status}")
        return Verdict(False, f"no {args['action']} action with that outcome")


_JUDGES: dict[str, Callable[[Expectations, dict[str, Any]], Verdict]] = {
    "mounted": lambda e, a: e.mounted(int(a["nsid"]), str(a["at"])),
    "not_mounted": lambda e, a: e.not_mounted(int(a["nsid"])),
    "hook_ran": Expectations.hook_ran,
    "journal": Expectations.journal,
    "action": Expectations.action,
    "present": Expectations.present,
    "absent": Expectations.absent,
}
