"""RELIABILITY.md's generated tables (issue 16.4): storms, faults, hostile inputs, soak figures.

Each table lives between ``<!-- generated: NAME ... -->`` and ``<!-- end: NAME -->``, as in the
README.  The sources: :data:`FAULTS` and :data:`HOSTILE` below (which test shows what; the
MESSAGE_IDs come from :mod:`nvme_agent.outputs.message_ids`), the storm specs of
:mod:`support.storm` through :func:`~support.storm.schedule` (what a storm tries), and the
soak's figures, kept as ``tests/fixtures/soak.json`` (``make soak`` writes them to
``build/soak.json``).  tests/test_reliability_doc.py checks that the document is what this
module renders, that every test it names exists, and that the figures have the soak's format.

    .venv/bin/python -m tests.support.reliability_doc                # rewrite RELIABILITY.md
    .venv/bin/python -m tests.support.reliability_doc --check        # exit 1 when out of date
    .venv/bin/python -m tests.support.reliability_doc --figures build/soak.json  # after a soak
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a module of the checkout: import support.* as the tests do
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nvme_agent.cli.readme import fill_blocks
from nvme_agent.outputs.message_ids import MESSAGES
from support.storm import SHORT, SOAK, StormSpec, counts, schedule

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "RELIABILITY.md"
FIGURES = REPO / "tests" / "fixtures" / "soak.json"
PYTEST = ".venv/bin/python -m pytest"


@dataclass(frozen=True)
class Fault:
    """One fault of issue 16.2 and the test that injects it."""

    fault: str  # as issue 16.2 names it
    test: str  # pytest node id
    shows: str  # what the agent reports, and what it leaves
    message: str  # the MESSAGE_ID's name ("" when the fault is the journal itself, "none")
    retried: str  # whether, and by whom
    evidence: tuple[str, ...]  # what the test's source asserts it with (checked)


_F = "tests/test_faults.py::"
FAULTS: tuple[Fault, ...] = (
    Fault(
        "a filesystem that fails to mount (corrupt image)",
        _F + "test_a_corrupt_filesystem_fails_to_mount_once_and_leaves_nothing",
        "mount `failed` with mount(8)'s cause and the device; the directory it made is removed",
        "action-failed",
        "no: the image will not heal",
        ('rig.failed("mount", 1)', 'len(results(agent, "mount", 1)) == 1'),
    ),
    Fault(
        "fsck failing",
        _F + "test_fsck_failing_stops_the_mount",
        "mount `failed`: `fsck: e2fsck exited 4`; nothing mounted, no directory left",
        "action-failed",
        "no",
        ('"e2fsck exited 4"', 'len(results(agent, "mount", 2)) == 1'),
    ),
    Fault(
        "the device removed during fsck",
        _F + "test_device_removed_during_fsck",
        "mount `failed` (fsck's I/O error), then the removal is logged; no directory left",
        "action-failed",
        "no: the device is gone",
        ('rig.failed("mount", 3)', 'len(results(agent, "mount", 3)) == 1'),
    ),
    Fault(
        "the device removed during mount",
        _F + "test_device_removed_during_mount",
        "mount `failed` (mount(8)'s I/O error), then the removal is logged; nothing mounted",
        "action-failed",
        "no: the device is gone",
        ('rig.failed("mount", 3)', 'len(results(agent, "mount", 3)) == 1'),
    ),
    Fault(
        "a hook that hangs",
        _F + "test_a_hook_that_hangs_is_killed_with_its_group",
        "exec `failed`: `timed out after 2s`; its whole process group gets SIGTERM, then "
        "SIGKILL; the rest of the plan is `skipped`",
        "action-failed",
        "no",
        ('"timed out after 2s"', 'rig.failed("exec", 4)', "_processes(token) == []"),
    ),
    Fault(
        "a hook that exits non-zero",
        _F + "test_a_hook_that_exits_non_zero",
        "exec `failed`: `exited 3`, with the hook's last stderr lines in `NVME_ERROR`; each "
        "output line logged once (`HOOK_STREAM=stderr`)",
        "action-failed",
        "no",
        ('"exited 3"', 'rig.failed("exec", 5)'),
    ),
    Fault(
        "a hook that forks a daemon child",
        _F + "test_a_hook_that_forks_a_daemon_child",
        "exec `ok` with `lingering=true` and one warning per run (`left processes holding its "
        "output open`); the children are not ours to kill; no reader thread waits on them",
        "action-ok",
        "no (nothing failed)",
        ("len(lingering) == 4", "threads[-1] <= threads[0]"),
    ),
    Fault(
        "systemctl missing",
        _F + "test_systemctl_missing_or_failing[missing]",
        "systemd `failed`: `systemctl is not installed`",
        "action-failed",
        "no",
        ('"systemctl is not installed"', 'len(results(agent, "systemd", 9)) == 1'),
    ),
    Fault(
        "systemctl failing",
        _F + "test_systemctl_missing_or_failing[failing]",
        "systemd `failed`: `systemctl exited N` with its stderr",
        "action-failed",
        "no",
        ('"systemctl exited"', 'len(results(agent, "systemd", 9)) == 1'),
    ),
    Fault(
        "the state directory read-only",
        _F + "test_state_directory_read_only_or_full[read-only]",
        "a mount the ledger cannot record is not tried: mount `failed` (`ledger`, `Read-only "
        "file system`); a history append that fails is logged once, then counted; every "
        "other plan still runs",
        "action-failed",
        "no for the mount; later writes try again and say when they work again",
        ('"ledger" in result["error"]', "len(history) <= 1"),
    ),
    Fault(
        "the state directory full (ENOSPC)",
        _F + "test_state_directory_read_only_or_full[full]",
        "as read-only, with `No space left on device`",
        "action-failed",
        "no for the mount; later writes try again and say when they work again",
        ('"No space"', "len(history) <= 1"),
    ),
    Fault(
        "no journal socket",
        _F + "test_no_journal_socket_falls_back_to_stderr",
        "every record goes to stderr as one line; one warning per outage names the socket",
        "",
        "yes: the socket is looked for at every entry; back to the journal when it returns",
        ('"namespace-added nsid=101" in log', '"exec ok" in log'),
    ),
    Fault(
        "the policy file deleted at reload",
        _F + "test_policy_gone_or_unreadable_at_reload_keeps_the_old_one[deleted]",
        "`reload` answers `invalid-policy`; one error (priority 3) naming the file; the old "
        "policy stays in force and keeps serving",
        "policy-reload-failed",
        "no: the operator fixes the file and reloads",
        ('answer["reason"] == "invalid-policy"', "rig.entries(MSG_POLICY_RELOAD_FAILED)"),
    ),
    Fault(
        "the policy file unreadable at reload (a directory)",
        _F + "test_policy_gone_or_unreadable_at_reload_keeps_the_old_one[a directory]",
        "as deleted",
        "policy-reload-failed",
        "no",
        ('answer["reason"] == "invalid-policy"', "rig.entries(MSG_POLICY_RELOAD_FAILED)"),
    ),
    Fault(
        "the policy file unreadable at reload (a FIFO)",
        _F + "test_policy_gone_or_unreadable_at_reload_keeps_the_old_one[a fifo]",
        "as deleted, without blocking on the FIFO",
        "policy-reload-failed",
        "no",
        ('answer["reason"] == "invalid-policy"', "rig.entries(MSG_POLICY_RELOAD_FAILED)"),
    ),
    Fault(
        "the clock jumping",
        _F + "test_the_wall_clock_jumping",
        "nothing fails: timeouts run on CLOCK_MONOTONIC; a hook running while the wall clock "
        "jumps a year ahead and three back finishes `ok`; two bad state files set aside in "
        "the same (stopped) second are both kept",
        "none",
        "nothing to retry",
        ('rig.failed("exec", 11) == []', '["not JSON 1", "not JSON 2"]'),
    ),
    Fault(
        "`kill -9` in the middle of a mount (found by the storm)",
        "tests/test_faults_mount.py::"
        "test_a_mount_done_by_a_killed_run_is_recorded_and_unmounted_later",
        "the restarted daemon takes the mount over (`by the agent`) and unmounts it later",
        "mounted",
        "yes: a plan a kill interrupted runs again after the restart",
        ('"by the agent" in outcome.message',),
    ),
    Fault(
        "`kill -9` before mount(8) mounted",
        "tests/test_faults_mount.py::"
        "test_a_run_killed_before_mounting_leaves_a_directory_the_next_run_uses",
        "the next run mounts on the directory the killed run made, and removes it at unmount",
        "mounted",
        "yes: as above",
        ("Status.OK",),
    ),
)


@dataclass(frozen=True)
class Hostile:
    """Inputs from someone not trusted, and the tests that throw them at the agent."""

    source: str
    tried: str
    tests: tuple[str, ...]  # pytest node ids (a parametrized test by its function)


def _t(file: str, *names: str) -> tuple[str, ...]:
    return tuple(f"tests/{file}::{n}" for n in names)


HOSTILE: tuple[Hostile, ...] = (
    Hostile(
        "policy bombs",
        "YAML alias bombs, 5,000 `[`, absurd nesting, a huge sparse file, a FIFO or a "
        "directory as the policy; hypothesis: arbitrary bytes, YAML fragments, mappings and "
        "mutated example policies raise only `PolicyError`, and what loads stays below the "
        "mount root",
        _t(
            "test_policy_loader.py",
            "test_alias_bombs_stop_at_the_node_bound_where_it_is_crossed",
            "test_absurdly_deep_parsed_data_is_an_error_not_a_recursion_error",
            "test_a_huge_sparse_file_is_refused_without_reading_it",
            "test_a_fifo_or_a_directory_is_refused_without_blocking",
            "test_arbitrary_bytes_raise_only_policy_error",
            "test_arbitrary_yaml_fragments_raise_only_policy_error",
            "test_mutated_example_policies_fail_cleanly_or_stay_below_the_mount_root",
        )
        + _t(
            "test_policy_properties.py",
            "test_loading_arbitrary_text_raises_only_policy_error",
            "test_loading_arbitrary_mappings_raises_only_policy_error",
        ),
    ),
    Hostile(
        "policy files others could change",
        "group/other-writable files and directories, another owner, a swap between check "
        "and read; an untrusted policy at start or reload",
        _t(
            "test_policy_files.py",
            "test_a_file_others_could_change_is_refused",
            "test_a_swap_between_the_check_and_the_read_is_caught",
            "test_the_daemon_refuses_to_start_with_an_untrusted_policy",
            "test_a_reload_of_an_untrusted_policy_keeps_the_old_one",
        ),
    ),
    Hostile(
        "labels, serials, NQNs, UUIDs, fs types",
        "path separators, `..`, `$(...)`, newlines with `<0>`, escapes, bidi controls, "
        "invalid UTF-8 through the real daemon; hypothesis: no rendered path leaves the mount "
        "root, no log line or hook value carries a raw control character; the storm mixes "
        "hostile labels into its adds",
        _t(
            "test_harness_hostile.py",
            "test_hostile_device_data_never_escapes_or_stops_the_daemon",
            "test_a_serial_or_nqn_with_a_newline_cannot_forge_a_log_line",
        )
        + _t(
            "test_policy_decide.py",
            "test_hostile_labels_stay_inside_the_mount_root_and_their_argument",
        )
        + _t("test_policy_properties.py", "test_decide_never_escapes")
        + _t(
            "test_actions_text.py",
            "test_escape_is_one_safe_line_and_unambiguous",
            "test_no_change_summary_or_topology_line_carries_a_raw_device_string",
            "test_hook_values_lose_control_characters_and_keep_the_raw_beside",
        )
        + _t("test_policy_duplicates.py", "test_a_hostile_uuid_is_shown_escaped_and_bounded")
        + _t(
            "test_daemon_refused.py",
            "test_a_refused_plan_with_a_hostile_fs_type_is_one_escaped_warning",
        )
        + _t(
            "test_topology_properties.py",
            "test_whatever_a_controller_says_no_placeholder_reaches_the_model",
        )
        + _t("test_cli_operator.py", "test_status_table_keeps_hostile_values_in_their_cells")
        + _t("test_storm.py", "test_short_storm"),
    ),
    Hostile(
        "the mount root and its paths",
        "a symlink planted inside the root or above it, a holder with a hostile command name",
        _t("test_actions_mount.py", "test_hostile_symlink_inside_mount_root_is_not_followed")
        + _t(
            "test_actions_mount_safety.py",
            "test_a_symlinked_parent_of_the_mount_root_is_refused",
            "test_a_busy_result_names_a_hostile_holder_escaped",
        ),
    ),
    Hostile(
        "hook programs and pidfiles",
        "a hook program others could change, a pidfile another user wrote, a FIFO as pidfile",
        _t(
            "test_actions_trust.py",
            "test_a_hook_program_others_could_change_is_refused",
            "test_a_pidfile_another_user_wrote_cannot_aim_at_roots_process",
            "test_a_fifo_as_pidfile_never_hangs_the_action",
        ),
    ),
    Hostile(
        "control socket",
        "hypothesis: random, partial, oversized and slow requests all get an answer and harm "
        "nothing; a flood of connections per user is capped and logged once; idle "
        "connections time out; subscribers are capped",
        _t(
            "test_daemon_control.py",
            "test_random_partial_oversized_and_slow_input_gets_an_answer_and_harms_nothing",
            "test_the_fuzzed_daemon_logged_no_traceback",
            "test_connections_per_user_are_capped_and_the_flood_is_logged_once",
            "test_idle_connections_time_out_and_others_are_answered_meanwhile",
            "test_event_subscribers_are_capped",
        ),
    ),
    Hostile(
        "state files",
        "hypothesis: state files of any shape are read or refused and restore never raises; "
        "any sequence of batches reads back exactly; a corrupt ledger and history",
        _t(
            "test_recovery.py",
            "test_state_files_of_any_shape_are_read_or_refused_and_restore_never_raises",
        )
        + _t("test_persist.py", "test_any_sequence_of_batches_reads_back_exactly")
        + _t("test_actions_parsing.py", "test_ledger_roundtrip_is_atomic_and_survives_corruption")
        + _t("test_journal_state.py", "test_the_history_command_survives_a_corrupt_file"),
    ),
    Hostile(
        "captures and scenarios",
        "hypothesis: any text or garbled capture replays without a traceback; any scenario "
        "loads or fails with positions",
        _t(
            "test_replay.py",
            "test_any_text_reads_without_a_traceback",
            "test_garbled_captures_replay_without_a_traceback",
        )
        + _t("test_harness_scenario.py", "test_any_text_loads_or_fails_with_positions"),
    ),
)


# --------------------------------------------------------------------------- rendering
def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _message(name: str) -> str:
    if name == "none":
        return "none: nothing fails"
    if not name:
        return "none: the journal is what is missing (stderr)"
    [doc] = [m for m in MESSAGES if m.name == name]
    return f"`{doc.name}` `{doc.message_id}`"


def reproduce(test: str) -> str:
    return f"`{PYTEST} '{test}'`"


def faults_table() -> str:
    rows = [
        "| fault | what the agent shows | MESSAGE_ID | retried | reproduce |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in FAULTS:
        rows.append(
            f"| {_cell(f.fault)} | {_cell(f.shows)} | {_message(f.message)} | "
            f"{_cell(f.retried)} | {reproduce(f.test)} |"
        )
    return "\n".join(rows)


def hostile_table() -> str:
    rows = ["| input | what is tried | tests |", "| --- | --- | --- |"]
    for h in HOSTILE:
        tests = "<br>".join(f"`{t}`" for t in h.tests)
        rows.append(f"| {_cell(h.source)} | {_cell(h.tried)} | {tests} |")
    return "\n".join(rows)


#: What a storm tries, in the order of the table (keys of :func:`support.storm.counts`).
TRIED = (
    ("steps", "namespace steps"),
    ("add", "adds"),
    ("remove", "removes"),
    ("hot-swap", "hot-swaps (remove + add of new contents)"),
    ("resize", "resizes"),
    ("change", "changes (new filesystem)"),
    ("with partitions", "adds with partitions"),
    ("real mounts", "adds of loop-backed ext4 (real mounts)"),
    ("hostile labels", "hostile labels"),
    ("reload", "policy reloads (valid)"),
    ("reload (broken)", "policy reloads (broken: refused, old policy kept)"),
    ("kill", "`kill -9` + restart (a batch sent while down)"),
    ("overrun", "overruns (a batch lost, then ENOBUFS)"),
    ("checkpoint", "checkpoints (+ one at the end)"),
)
STORMS = (
    ("SHORT", "`make test`", "tests/test_storm.py::test_short_storm", SHORT),
    ("SOAK", "`make soak`", "tests/test_storm.py::test_soak", SOAK),
)


def storms_table() -> str:
    tallies = [counts(schedule(spec)) for *_, spec in STORMS]
    head = " | ".join(f"{name} ({where})" for name, where, *_ in STORMS)
    rows = [f"| tried | {head} |", "| --- |" + " ---: |" * len(STORMS)]
    rows.append("| seed | " + " | ".join(str(spec.seed) for *_, spec in STORMS) + " |")
    for key, label in TRIED:
        rows.append(f"| {label} | " + " | ".join(f"{t[key]:,}" for t in tallies) + " |")
    rows.append("| test | " + " | ".join(f"`{test}`" for _, _, test, _ in STORMS) + " |")
    return "\n".join(rows)


def load_figures(path: Path = FIGURES) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _checkpoint_rows(checkpoints: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| # | after op | incarnation | namespaces | mounted | fds | threads | RSS (MiB) | "
        "elapsed (s) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, c in enumerate(checkpoints, 1):
        rows.append(
            f"| {i} | {c['op']:,} | {c['incarnation']} | {c['namespaces']} | {c['mounted']} | "
            f"{c['fds']} | {c['threads']} | {c['rss_kib'] / 1024:.1f} | {c['seconds']:,.1f} |"
        )
    return rows


#: What the soak section says while no soak has run to its end (the attempts are below it).
NO_SOAK = (
    "**No complete soak yet**: every 10,000-step run so far stopped at a check (see "
    "*Soak attempts* below); `tests/fixtures/soak.json` is written by the first that ends."
)


def soak_figures(data: dict[str, Any] | None = None) -> str:
    if data is None and not FIGURES.exists():
        return NO_SOAK
    data = load_figures() if data is None else data
    spec = StormSpec(**data["spec"])
    fig, machine = data["figures"], data["machine"]
    minutes = fig["seconds"] / 60
    lines = [
        f"Storm {spec.describe()}.",
        "",
        f"- wall time: {fig['seconds']:,.0f} s ({minutes:.0f} min) for "
        f"{data['tried']['steps']:,} steps",
        f"- changes checked in the history: {fig['history_records']:,} (re-runs after a "
        f"restart: {fig['reruns']}); hook runs checked: {fig['hook_runs']:,}; fd counts "
        f"measured again after a second settle: {fig.get('fd_rechecks', 0)}; most real "
        f"mounts at once: {fig['mounts_max']}",
        f"- machine: {machine['cpus']} CPUs ({machine['cpu']}), {machine['mem_mib']:,} MiB, Linux "
        f"{machine['kernel']}, Python {machine['python']}; load average at the end "
        f"{machine['load_at_end'][0]} (shared with other work)",
    ]
    if spec != SOAK:
        lines.append(
            f"- **reduced**: {spec.describe()}, not `make soak`'s {SOAK.describe()} (see "
            "*Soak attempts* below)"
        )
    lines += ["", *_checkpoint_rows(fig["checkpoints"])]
    return "\n".join(lines)


BLOCKS: dict[str, Callable[[], str]] = {
    "storms": storms_table,
    "faults": faults_table,
    "hostile": hostile_table,
    "soak": soak_figures,
}


def update(text: str) -> str:
    """``text`` with every generated block rewritten; a missing block is an error."""
    return fill_blocks(text, BLOCKS, DOC.name)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.support.reliability_doc",
        description="Rewrite (or check) the generated tables of RELIABILITY.md.",
    )
    ap.add_argument("--check", action="store_true", help="exit 1 if a table is out of date")
    ap.add_argument(
        "--figures",
        type=Path,
        help=f"a soak's figures (build/soak.json) to keep as {FIGURES.relative_to(REPO)} first",
    )
    args = ap.parse_args(argv)
    if args.figures is not None:
        load_figures(args.figures)  # JSON, or fail before anything is replaced
        shutil.copyfile(args.figures, FIGURES)
    text = DOC.read_text(encoding="utf-8")
    new = update(text)
    if args.check:
        if new != text:
            print(f"{DOC.name}: generated tables out of date; run {ap.prog}", file=sys.stderr)
            return 1
        return 0
    if new != text:
        DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
