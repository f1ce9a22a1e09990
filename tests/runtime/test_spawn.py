"""`spawn_node`: hakit nodes in child processes on 127.0.0.1, with real signals as faults."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import trio

import hakit
from hakit import spawn_node

SECRET = "a secret for spawned nodes"


async def line_with(node: object, text: str) -> None:
    """Wait (real time, bounded) for an output line of a spawned node containing `text`."""
    with trio.fail_after(30):
        while not any(text in line for line in node.lines):  # type: ignore[attr-defined]
            await trio.sleep(0.02)


async def test_spawned_nodes_replicate_and_take_real_faults() -> None:
    async with spawn_node("pm", secret=SECRET) as master:
        async with spawn_node("pr", master=master.address, secret=SECRET) as replica:
            await line_with(replica, "replica pr synced")
            done = await master.call("put", key="k", value="v")
            assert done["acked"] == ["pr"]
            assert (await replica.call("get", key="k"))["value"] == "v"
            # SIGSTOP: the node is silent, not gone; SIGCONT: it answers again.
            replica.pause()
            assert replica.paused
            with pytest.raises(hakit.NetworkTimeoutError):
                await replica.status(timeout=0.5)
            replica.resume()
            assert (await replica.status())["txid"] == 1
            # SIGKILL: the master sees the link drop.
            replica.kill()
            assert await replica.wait() == -signal.SIGKILL
            await line_with(master, "replica pr detached")
            status = await master.status()
            assert status["role"] == "master" and status["replicas"] == []
        assert master.running
    assert not master.running  # the process ended with the block


async def test_a_node_that_cannot_start_is_reported_with_its_output() -> None:
    with pytest.raises(hakit.HakitError, match="cannot open --sqlite /nonexistent/dir/db"):
        async with spawn_node("bad", args=("--sqlite", "/nonexistent/dir/db")):
            pass  # pragma: no cover


async def test_a_spawned_node_ends_when_its_parent_dies() -> None:
    # A parent that starts a node as spawn_node does (--exit-with-parent), waits until it
    # listens, tells its pid, and is then killed: the node must not outlive it.
    script = (
        "import subprocess, sys, tempfile, time\n"
        "command = [sys.executable, '-m', 'hakit', 'node', 'orphan', '--exit-with-parent']\n"
        "out = tempfile.TemporaryFile()\n"
        "child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out)\n"
        "while b'listening' not in (out.seek(0) or out.read()):\n"
        "    time.sleep(0.05)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = await trio.lowlevel.open_process(
        [sys.executable, "-c", script], stdout=subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        data = b""
        with trio.fail_after(60):
            while not data.endswith(b"\n"):
                data += await parent.stdout.receive_some(64)
        child = int(data)
        assert not _gone(child)
        parent.kill()
        await parent.wait()
        with trio.fail_after(30):
            while not _gone(child):
                await trio.sleep(0.05)
    finally:
        with trio.CancelScope(shield=True):
            parent.kill()
            await parent.wait()


def _gone(pid: int) -> bool:
    """Whether `pid` has ended (a zombie its new parent has not reaped yet counts)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            state = file.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")
