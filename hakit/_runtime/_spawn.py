"""`spawn_node`: a ``hakit node`` in a child process on 127.0.0.1, with real faults.

The child is an operated node (see `hakit._runtime._control`): this process talks to it
through its control service, and faults are real signals: `NodeProcess.kill` is SIGKILL,
`pause` / `resume` are SIGSTOP / SIGCONT. The child never outlives the ``async with`` block.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import trio

from ..protocol import HakitError, InvalidArgumentError
from ..protocol._auth import check_secret
from ._control import ControlClient
from ._security import Security

#: Output lines kept per child (its event lines).
_LINES = 1000


class NodeProcess:
    """A node running in a child process (made by `spawn_node`).

    Attributes:
        name: the node's name.
        cluster: its cluster name.
        address: where it listens (``127.0.0.1:port``).
        lines: its most recent output lines (one per event), oldest first.
    """

    def __init__(
        self, name: str, process: trio.Process, security: Security, cluster: str = "hakit"
    ) -> None:
        self.name = name
        self.cluster = cluster
        self.address = ""
        self.lines: deque[str] = deque(maxlen=_LINES)
        self._process = process
        self._security = security
        self._paused = False

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}"
        if self._paused:
            state = "paused"
        return f"<hakit.NodeProcess {self.name!r} pid={self.pid} {state} at {self.address}>"

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The child's exit status (negative: killed by that signal), None while it runs."""
        return self._process.poll()

    @property
    def running(self) -> bool:
        """Whether the child has not exited."""
        return self.returncode is None

    @property
    def paused(self) -> bool:
        """Whether `pause` stopped it (and `resume` has not continued it)."""
        return self._paused and self.running

    def kill(self) -> None:
        """SIGKILL: the node dies at once, as a crashed host's would."""
        if self.running:
            self._process.send_signal(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: the node freezes (its peers see silence, not a closed link)."""
        if self.running:
            self._process.send_signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """SIGCONT: a paused node goes on where it stopped."""
        if self.running:
            self._process.send_signal(signal.SIGCONT)
        self._paused = False

    async def call(self, op: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
        """One control request (``status``, ``put``, ``promote``...; see `ControlService`)."""
        client = ControlClient(
            self.address, security=self._security, timeout=timeout, cluster=self.cluster
        )
        async with client as c:
            return await c.call(op, **args)

    async def status(self, timeout: float = 5.0) -> dict[str, Any]:
        """Its statistics, as ``hakit status --json`` prints them."""
        return (await self.call("status", timeout))["status"]  # type: ignore[no-any-return]

    async def wait(self) -> int:
        """Wait for the child to exit; return its exit status."""
        return await self._process.wait()


@asynccontextmanager
async def spawn_node(
    name: str,
    *,
    master: str | None = None,
    secret: bytes | str | None = None,
    cluster: str = "hakit",
    args: tuple[str, ...] = (),
    ready_timeout: float = 60.0,
) -> AsyncIterator[NodeProcess]:
    """Run ``hakit node NAME`` in a child process on 127.0.0.1 for the block's duration.

    Args:
        name: the node's name.
        master: a master address to attach to as a replica (default: it is a master).
        secret: the cluster secret (passed to the child in a private temporary file).
        cluster: the cluster name (``--cluster``): peers and control requests must give it.
        args: more ``hakit node`` flags (``--sqlite``, ``--tls-cert``...).
        ready_timeout: seconds the child may take to start listening.

    Raises:
        HakitError: the child exited or did not listen in time (its output says why).
    """
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError("a node needs a non-empty name")
    security = Security.make(secret, None)
    with tempfile.TemporaryDirectory(prefix="hakit-node-") as tmp:
        command = [sys.executable, "-m", "hakit", "node", name, "--listen", "127.0.0.1:0"]
        command += ["--cluster", cluster, "--exit-with-parent"]
        if master is not None:
            command += ["--master", master]
        if security.secret is not None:
            path = os.path.join(tmp, "secret")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(check_secret(security.secret))
            command += ["--secret-file", path]
        command += list(args)
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        node = NodeProcess(name, process, security, cluster)
        try:
            async with trio.open_nursery() as nursery:
                listening = trio.Event()
                nursery.start_soon(_pump, node, process, listening)
                with trio.move_on_after(ready_timeout):
                    await listening.wait()
                if not node.address:
                    nursery.cancel_scope.cancel()
                else:
                    try:
                        yield node
                    finally:
                        nursery.cancel_scope.cancel()
            if not node.address:  # raised here, not in the nursery: the caller sees it bare
                output = "\n".join(node.lines)
                raise HakitError(f"node process {name!r} did not start listening:\n{output}")
        finally:
            with trio.CancelScope(shield=True):
                node.resume()  # a stopped process cannot act on a signal but SIGKILL
                node.kill()
                await process.wait()
                if process.stdout is not None:
                    with suppress(trio.ClosedResourceError, OSError):
                        await process.stdout.aclose()


async def _pump(node: NodeProcess, process: trio.Process, listening: trio.Event) -> None:
    """Keep the child's output lines; the first one tells where it listens."""
    assert process.stdout is not None
    buffer = b""
    marker = f"{node.name} listening at "
    while chunk := await process.stdout.receive_some(65536):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace")
            node.lines.append(line)
            if not node.address and line.startswith(marker):
                node.address = line[len(marker) :].strip()
                listening.set()
    listening.set()  # exited: the caller reports its output
