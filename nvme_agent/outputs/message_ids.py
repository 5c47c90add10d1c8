"""Every fixed journal ``MESSAGE_ID`` of nvme-agent, with what it means: the one table.

The IDs themselves are defined where they are logged (topology and daemon events in
:mod:`nvme_agent.outputs.journal`, action outcomes in :mod:`nvme_agent.actions.messages`) and
never change between releases.  This table adds a name, a subject and an explanation to each;
the man page's JOURNAL section, the README's table and the journal catalog
(``/usr/lib/systemd/catalog/nvme-agent.catalog``, which ``journalctl -x`` shows) are generated
from it, and a test checks that it holds every ID defined in those two modules exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

from nvme_agent.actions import messages
from nvme_agent.outputs import journal
from nvme_agent.topology.changes import ChangeType


@dataclass(frozen=True, slots=True)
class MessageDoc:
    """One MESSAGE_ID: a stable ``name``, a one-line ``subject``, and an explanation.

    ``subject`` and ``body`` may name journal fields as ``@FIELD@``; ``journalctl -x``
    substitutes the entry's value.  Only fields every entry of that ID carries are used.
    """

    name: str
    message_id: str
    kind: str  # "topology", "daemon" or "action": which part of the agent logs it
    subject: str
    body: str


def _change(change: ChangeType, subject: str, body: str) -> MessageDoc:
    return MessageDoc(change.value, journal.CHANGE_MESSAGE_IDS[change], "topology", subject, body)


_NS_FIELDS = (
    "The entry carries NVME_NSID, NVME_CTRL, NVME_IDENTITY, NVME_IDENTITY_WEAK, DEVNAME and, "
    "where known, NVME_NS_UUID, NVME_NGUID, NVME_EUI64, NVME_WWID, NVME_SUBSYSNQN, SIZE_BYTES "
    "and ID_FS_TYPE, ID_FS_LABEL, ID_FS_UUID."
)

_PATH_FIELDS = (
    "The path that came or went is in NVME_PATH_CTRL (its controller), NVME_PATH_DEVICE (its "
    "block device, when seen), NVME_TRANSPORT, NVME_ADDRESS and NVME_PATH_STATE (its "
    "controller's transport, address and state), and NVME_PATHS_LIVE counts the live paths "
    "after the change."
)

MESSAGES: tuple[MessageDoc, ...] = (
    _change(
        ChangeType.NAMESPACE_ADDED,
        "NVMe namespace @NVME_NSID@ added",
        "An NVMe namespace appeared (hot-add, attach, or present at start with "
        "NVME_COLDPLUG=1).  The policy's on_add actions follow, each logged with its own "
        "MESSAGE_ID.  NVME_IDENTITY_WEAK=1 means the controller reports no unique identifier "
        "(QEMU's quirk): a swapped image at the same NSID cannot be told from the old one, so "
        "match on the filesystem UUID or label.  " + _NS_FIELDS,
    ),
    _change(
        ChangeType.NAMESPACE_REMOVED,
        "NVMe namespace @NVME_NSID@ removed",
        "An NVMe namespace went away (hot-remove, detach).  If it was still mounted, the agent "
        "lazily detaches the dead mount at once: writes that were not yet on the device are "
        "lost.  Use `nvme-agent eject` before detaching to unmount cleanly.  " + _NS_FIELDS,
    ),
    _change(
        ChangeType.NAMESPACE_RESIZED,
        "NVMe namespace @NVME_NSID@ resized",
        "The namespace's capacity changed; SIZE_BYTES is the new size and PREVIOUS_SIZE_BYTES "
        "the old one.  The policy's on_resize actions (for example grow) follow.",
    ),
    _change(
        ChangeType.NAMESPACE_CHANGED,
        "NVMe namespace @NVME_NSID@ changed",
        "A filesystem appeared on, or changed on, a namespace that stays in place (for example "
        "mkfs on a blank namespace).  The on_add actions of the rule that matches now follow.",
    ),
    _change(
        ChangeType.PARTITION_ADDED,
        "Partition added on NVMe namespace @NVME_NSID@",
        "A partition of an NVMe namespace appeared; NVME_PARTITION names it and DEVNAME is its "
        "device.  Rules with partition: true decide what happens.",
    ),
    _change(
        ChangeType.PARTITION_REMOVED,
        "Partition removed from NVMe namespace @NVME_NSID@",
        "A partition of an NVMe namespace went away; a mount of it is handled like the mount "
        "of a removed namespace.",
    ),
    _change(
        ChangeType.CONTROLLER_ADDED,
        "NVMe controller @NVME_CTRL@ added",
        "An NVMe controller appeared (NVME_SERIAL, NVME_MODEL and NVME_SUBSYSNQN where "
        "known).  Its namespaces are logged separately.",
    ),
    _change(
        ChangeType.CONTROLLER_REMOVED,
        "NVMe controller @NVME_CTRL@ removed",
        "An NVMe controller went away.  With native multipath its namespaces stay while "
        "another path reaches them; otherwise their removals are logged separately.",
    ),
    _change(
        ChangeType.PATH_ADDED,
        "NVMe namespace @NVME_NSID@ gained a path",
        "One more controller reaches a namespace that was already present (a second port of "
        "an NVMe-oF target, a second controller of a shared subsystem, a path that came "
        "back).  Nothing is mounted again: the namespace is the same.  Logged at info level.  "
        + _NS_FIELDS
        + "  "
        + _PATH_FIELDS,
    ),
    _change(
        ChangeType.PATH_LOST,
        "NVMe namespace @NVME_NSID@ lost a path",
        "A controller no longer reaches a namespace that other controllers still reach (a "
        "port went down, `nvme detach-ns` on one controller, a controller was removed).  The "
        "namespace stays; redundancy is reduced, so the entry is a warning.  Without native "
        "multipath the namespace's block device may change to the disk of another path "
        "(DEVNAME is the device now, PREVIOUS_DEVNAME the one before): a mount the agent made "
        "through the lost device is dead, is lazily detached (a dead-mount entry) and the "
        "namespace's add plan runs again on the surviving device.  "
        + _NS_FIELDS
        + "  "
        + _PATH_FIELDS,
    ),
    MessageDoc(
        "daemon-ready",
        journal.MSG_DAEMON_READY,
        "daemon",
        "Daemon ready",
        "Every namespace present at start has been handled as the policy says (or the ready "
        "timeout passed); systemd got READY=1, so units ordered after nvme-agent.service see "
        "the mounts.  The message gives the live counts.",
    ),
    MessageDoc(
        "policy-reloaded",
        journal.MSG_POLICY_RELOADED,
        "daemon",
        "Policy reloaded",
        "The policy file NVME_POLICY was valid and replaced the old policy.  Actions already "
        "running finish under the policy they started with.",
    ),
    MessageDoc(
        "policy-reload-failed",
        journal.MSG_POLICY_RELOAD_FAILED,
        "daemon",
        "Policy reload failed; the old policy stays in force",
        "The policy file NVME_POLICY has errors (in the message, as file:line:column).  Nothing "
        "changed: the previous policy keeps running.  Fix the file (`nvme-agent check`) and "
        "reload again.",
    ),
    MessageDoc(
        "events-overrun",
        journal.MSG_EVENTS_OVERRUN,
        "daemon",
        "udev events lost (netlink overrun); devices re-enumerated",
        "The kernel dropped udev events because the agent's receive buffer was full (a large "
        "burst).  The agent enumerated every device again and logged the differences as "
        "changes, so nothing is missed.  Nothing to do; a larger buffer needs CAP_NET_ADMIN.",
    ),
    MessageDoc(
        "recovery",
        journal.MSG_RECOVERY,
        "daemon",
        "State recovered after a restart",
        "After a restart (or a crash) the agent compared what it knew with what is present.  "
        "Changes that happened while it was down are logged and acted on; a mount whose "
        "namespace vanished meanwhile is lazily detached (unflushed data may have been lost).",
    ),
    MessageDoc(
        "ejected",
        journal.MSG_EJECTED,
        "daemon",
        "NVMe namespace @NVME_NSID@ ejected: safe to remove",
        "`nvme-agent eject` unmounted the namespace and ran its remove plan while the device "
        "was still present.  The host may now detach it (device_del, nvme detach-ns).",
    ),
    MessageDoc(
        "plan",
        journal.MSG_PLAN,
        "daemon",
        "Actions planned for a change",
        "The policy decided what to do for a topology change: the rule that matched and the "
        "actions, in order.  Each action's outcome is logged with its own MESSAGE_ID.",
    ),
    MessageDoc(
        "plan-refused",
        journal.MSG_PLAN_REFUSED,
        "daemon",
        "Plan refused by the policy",
        "The policy refused to act on a change: the message names the device and the cause, "
        "for example a filesystem type outside defaults.allowed_filesystems, or a mount path "
        "that a device's label cannot render safely.  Nothing was done for this change beyond "
        "logging it; fix the policy or the device and reconcile or re-attach.",
    ),
    MessageDoc(
        "dead-mount",
        journal.MSG_DEAD_MOUNT,
        "daemon",
        "Mount of a device that went away: lazily detached",
        "A filesystem the agent mounted lost its device while no plan would unmount it: the "
        "mounted device of a namespace went with one of its paths (without native multipath; "
        "the namespace stays on the next path's device and is mounted again from it, as the "
        "policy says), or a namespace was removed while the rule that matched it at removal "
        "was not the one that mounted it.  DEVNAME is the lost device, MOUNTPOINT the mount; "
        "writes that had not reached the device are lost.",
    ),
    MessageDoc(
        "reconcile",
        journal.MSG_RECONCILE,
        "daemon",
        "The policy in force differs from what ran for present namespaces",
        "After a reload, the new policy would treat some namespaces already present "
        "differently from the policy that handled them (mount them, mount them elsewhere, "
        "no longer mount them); the message lists their NSIDs.  `nvme-agent status` marks "
        'them "not applied (policy changed)" and `nvme-agent reconcile` applies the new policy '
        "to them (undo the old plan, run the new one); with defaults.reconcile_on_reload the "
        "agent does so at once and says so here.",
    ),
    MessageDoc(
        "action-ok",
        messages.ACTION_OK,
        "action",
        "Action @NVME_ACTION@ succeeded",
        "An action of a plan finished successfully (exec, systemd, signal, grow, or anything "
        "without its own MESSAGE_ID).  NVME_RULE names the rule, NVME_PLAN_KEY the plan and "
        "NVME_CHANGE the change it answers.",
    ),
    MessageDoc(
        "action-failed",
        messages.ACTION_FAILED,
        "action",
        "Action @NVME_ACTION@ failed",
        "An action failed; NVME_ERROR says why.  The rest of its plan is skipped, except the "
        "unmount of a removal plan.  `nvme-agent status` and `nvme-agent history` show the "
        "state; `nvme-agent explain` shows what the policy asks for.",
    ),
    MessageDoc(
        "action-skipped",
        messages.ACTION_SKIPPED,
        "action",
        "Action @NVME_ACTION@ cancelled or skipped",
        "The action did not run: its namespace went away first (cancelled), an earlier action "
        "of the plan failed, or there was nothing of ours to act on (skipped).",
    ),
    MessageDoc(
        "mounted",
        messages.MOUNTED,
        "action",
        "Filesystem mounted",
        "A filesystem was mounted as the policy says (or was found already mounted at its "
        "target).  The message names the device and the mount point.",
    ),
    MessageDoc(
        "unmounted",
        messages.UNMOUNTED,
        "action",
        "Filesystem unmounted",
        "A mount the agent made was unmounted cleanly: its data is on the device.",
    ),
    MessageDoc(
        "lazy-detach",
        messages.LAZY_DETACH,
        "action",
        "Mount lazily detached: data may have been lost",
        "The device of a mount the agent made disappeared before it was unmounted (hot-remove "
        "or detach without eject), or a graceful unmount was impossible.  The mount was "
        "detached lazily; writes that had not reached the device are lost, although the "
        "writers saw success.  Detach namespaces only after `nvme-agent eject` reports them "
        "safe to remove.",
    ),
    MessageDoc(
        "dry-run",
        messages.DRY_RUN,
        "action",
        "Action @NVME_ACTION@ not executed (dry run)",
        "The agent runs with --dry-run: the action was planned and reported, not executed.",
    ),
)


def by_id() -> dict[str, MessageDoc]:
    """The table keyed by MESSAGE_ID."""
    return {doc.message_id: doc for doc in MESSAGES}
