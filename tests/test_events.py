"""The event stream socket and `nvme-agent watch`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nvme_agent.outputs import times
from nvme_agent.outputs.events import EventStream

WAIT = 20.0


def timed(record: dict[str, object]) -> dict[str, object]:
    """``record`` without its ``"time"``, which every published record must carry (RFC 3339
    in UTC, as :func:`times.timestamp` writes it)."""
    rest = dict(record)
    when = rest.pop("time")
    assert isinstance(when, str) and when.endswith("Z") and times.parse(when) is not None, when
    return rest


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Await a condition that the event loop itself makes true (checked once per loop turn)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0)


def short_dir(tmp_path: Path) -> Path:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp paths can be long.
    d = Path("/tmp") / f"nvme-ev-{os.getpid()}-{abs(hash(tmp_path)) % 10**8}"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture
def sockdir(tmp_path: Path) -> Iterator[Path]:
    d = short_dir(tmp_path)
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


def test_socket_mode_group_and_stale_file(sockdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = sockdir / "events.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file left by a crashed daemon

    async def main() -> None:
        s = EventStream(str(path), group=None)
        await s.start()
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        await s.close()
        assert not path.exists()
        s = EventStream(str(path), group="no-such-group-nvme-agent-test")
        await s.start()
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        await s.close()
        if os.geteuid() == 0:
            s = EventStream(str(path), group="root")
            await s.start()
            st = os.lstat(path)
            assert st.st_gid == 0 and stat.S_IMODE(st.st_mode) == 0o660
            await s.close()

    with caplog.at_level(logging.WARNING, logger="nvme_agent.outputs.events"):
        asyncio.run(main())
    assert any("does not exist" in r.getMessage() for r in caplog.records)


def test_refuses_to_replace_a_non_socket(sockdir: Path) -> None:
    path = sockdir / "events.sock"
    path.write_text("not a socket")

    async def main() -> None:
        with pytest.raises(FileExistsError):
            await EventStream(str(path), group=None).start()

    asyncio.run(main())
    assert path.read_text() == "not a socket"


def test_publish_reaches_every_subscriber(sockdir: Path) -> None:
    path = str(sockdir / "events.sock")

    async def main() -> list[list[dict[str, object]]]:
        s = EventStream(path, group=None)
        await s.start()
        readers = [await asyncio.open_unix_connection(path) for _ in range(2)]
        await wait_until(lambda: s.subscriber_count == 2)
        s.publish({"type": "ready", "nsid": None})
        s.publish({"type": "namespace-added", "nsid": 2, "path": Path("/x")})
        out = []
        for reader, writer in readers:
            out.append([json.loads(await reader.readline()) for _ in range(2)])
            writer.close()
        await s.close()
        return out

    for lines in asyncio.run(main()):
        assert [timed(r) for r in lines] == [
            {"type": "ready", "nsid": None},
            {"type": "namespace-added", "nsid": 2, "path": "/x"},
        ]


def test_stuck_subscriber_is_dropped_without_blocking_publish(
    sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(sockdir / "events.sock")
    record = {"type": "action-result", "nsid": 1, "message": "x" * 1000}
    total = 6000  # ~6 MB: far more than the kernel socket buffer plus max_buffer

    async def main() -> tuple[int, bool]:
        s = EventStream(path, group=None, max_buffer=64 * 1024)
        await s.start()
        stuck = socket.socket(socket.AF_UNIX)
        stuck.connect(path)  # never reads
        reader, writer = await asyncio.open_unix_connection(path, limit=1 << 20)
        await wait_until(lambda: s.subscriber_count == 2)
        got = 0
        for _batch in range(total // 100):
            for _ in range(100):
                s.publish(record)  # synchronous: returns without waiting for anyone
            for _ in range(100):
                json.loads(await reader.readline())
                got += 1
        dropped = s.subscriber_count == 1
        # The stuck subscriber sees its connection end after whatever was buffered.
        stuck.setblocking(False)
        loop = asyncio.get_running_loop()
        while True:
            try:
                chunk = await loop.sock_recv(stuck, 1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
        stuck.close()
        writer.close()
        await s.close()
        return got, dropped

    with caplog.at_level(logging.WARNING, logger="nvme_agent.outputs.events"):
        got, dropped = asyncio.run(main())
    assert got == total  # the fast subscriber got everything
    assert dropped
    notices = [
        r.getMessage() for r in caplog.records if "dropping event subscriber" in r.getMessage()
    ]
    assert len(notices) == 1 and f"pid={os.getpid()}" in notices[0]


def test_a_subscriber_reading_all_the_while_keeps_up_with_one_long_burst(sockdir: Path) -> None:
    # A rescan of a thousand namespaces publishes thousands of records in one loop callback,
    # so the writer callback cannot run meanwhile.  A subscriber that reads all the while
    # (`nvme-agent watch`, in another process) must not be taken for a stuck one: here it
    # reads between publishes, in this very thread, and the loop never runs in between.
    path = str(sockdir / "events.sock")
    record = {"type": "action-result", "nsid": 1, "message": "x" * 1000}

    async def main() -> tuple[bool, int, int]:
        s = EventStream(path, group=None, max_buffer=64 * 1024)
        await s.start()
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(path)
        await wait_until(lambda: s.subscriber_count == 1)
        sock.setblocking(False)
        got = 0

        def read_all() -> None:
            nonlocal got
            with contextlib.suppress(BlockingIOError):
                while chunk := sock.recv(1 << 20):
                    got += chunk.count(b"\n")

        # Fill the kernel's buffer: the stream starts holding lines back (its own buffer).
        (sub,) = s._subs.values()
        sent = 0
        while not sub.buf:
            s.publish(record)
            sent += 1
        held = sent  # about what the kernel holds for this socket
        for _ in range(20):  # 10x the kernel's buffer, far past max_buffer
            read_all()
            for _ in range(held // 2):
                s.publish(record)
                sent += 1
        kept = s.subscriber_count == 1
        await wait_until(lambda: not sub.buf)  # the loop runs again: the writer flushes
        read_all()
        sock.close()
        await s.close()
        return kept, sent, got

    kept, sent, got = asyncio.run(main())
    assert kept and got == sent


def _run_watch(path: str, *args: str) -> tuple[int, str, str]:
    async def main() -> tuple[int, str, str]:
        s = EventStream(path, group=None)
        await s.start()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "nvme_agent",
            "watch",
            "--socket",
            path,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await wait_until(lambda: s.subscriber_count == 1)
        s.publish(
            {
                "type": "namespace-added",
                "nsid": 2,
                "ctrl": "nvme0",
                "namespace": {"name": "nvme0n2"},
                "coldplug": False,
            }
        )
        s.publish(
            {
                "type": "action-result",
                "nsid": 2,
                "action": "mount",
                "status": "ok",
                "message": "mounted /dev/nvme0n2 at /srv/nvme/x",
                "error": None,
            }
        )
        s.publish(
            {
                "type": "action-result",
                "nsid": 2,
                "action": "exec",
                "status": "failed",
                "message": "hook x exited 3",
                "error": "hook x exited 3: boom",
            }
        )
        await s.close()  # EOF ends watch
        out, err = await asyncio.wait_for(proc.communicate(), WAIT)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    return asyncio.run(main())


def test_watch_prints_json_lines(sockdir: Path) -> None:
    rc, out, _ = _run_watch(str(sockdir / "events.sock"), "--json", "--count", "2")
    assert rc == 0
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x["type"] for x in lines] == ["namespace-added", "action-result"]
    assert lines[1]["message"] == "mounted /dev/nvme0n2 at /srv/nvme/x"


def test_watch_prints_human_lines_until_eof(sockdir: Path) -> None:
    rc, out, _ = _run_watch(str(sockdir / "events.sock"))
    assert rc == 0
    lines = out.splitlines()
    for line in lines:  # each after its local time: 2026-01-31T10:15:02.123+01:00
        assert times.parse(line.split(" ", 1)[0]) is not None, line
    assert [line.split(" ", 1)[1] for line in lines] == [
        "namespace-added nsid=2 nvme0n2 ctrl=nvme0",
        "[ok] mount nsid=2: mounted /dev/nvme0n2 at /srv/nvme/x",
        "[failed] exec nsid=2: hook x exited 3 (error: hook x exited 3: boom)",
    ]


def test_watch_without_agent_fails_clearly(sockdir: Path) -> None:
    from nvme_agent.cli.exits import Exit
    from nvme_agent.cli.main import main

    assert main(["watch", "--runtime-dir", str(sockdir)]) == Exit.NO_DAEMON


def test_a_connected_subscriber_gets_events_published_before_the_loop_turns(
    sockdir: Path,
) -> None:
    path = str(sockdir / "events.sock")

    async def main() -> dict[str, object]:
        s = EventStream(path, group=None)
        await s.start()
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)  # the loop has not run since: no accept callback yet
        s.publish({"type": "reload-failed", "nsid": None})
        client.settimeout(WAIT)
        line = client.makefile("rb").readline()
        client.close()
        await s.close()
        record: dict[str, object] = json.loads(line)
        return record

    assert timed(asyncio.run(main())) == {"type": "reload-failed", "nsid": None}


def test_a_record_with_more_to_follow_goes_out_with_the_next_or_when_the_loop_turns(
    sockdir: Path,
) -> None:
    path = str(sockdir / "events.sock")

    async def main() -> tuple[bytes, list[bytes], list[bytes]]:
        s = EventStream(path, group=None)
        await s.start()
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        client.setblocking(False)
        s.publish({"type": "namespace-added", "nsid": 1}, more=True)
        held = b""
        with contextlib.suppress(BlockingIOError):
            held = client.recv(65536)  # nothing yet: the line waits for the plan
        s.publish({"type": "plan", "nsid": 1})
        client.settimeout(WAIT)
        reader = client.makefile("rb")
        together = [reader.readline(), reader.readline()]
        s.publish({"type": "namespace-added", "nsid": 2}, more=True)  # and nothing follows
        await asyncio.sleep(0)  # the loop turns
        alone = [reader.readline()]
        client.close()
        await s.close()
        return held, together, alone

    held, together, alone = asyncio.run(main())
    assert held == b""
    assert [json.loads(x)["type"] for x in together] == ["namespace-added", "plan"]
    assert [json.loads(x)["nsid"] for x in alone] == [2]
