"""Child processes of the benchmark: spawn, talk over pipes, and always kill by PID.

A child is ``python -m bench._child ROLE ...``. It writes one JSON object per line on its
stdout (the first one is ``{"event": "ready", ...}``) and reads one command per line on its
stdin. Children are killed with SIGKILL by PID when their ``async with`` block ends, at
interpreter exit (atexit) as a last resort, and they also exit by themselves when their
stdin closes or their parent dies (PR_SET_PDEATHSIG, set in the child).

Processes are started with `subprocess.Popen` from the main thread on purpose: PDEATHSIG fires
when the *thread* that forked the child exits, so forking from a worker thread (as
`trio.lowlevel.open_process` does) could kill a child as soon as that thread is retired.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import trio

from ._frames import LineReader

_ROOT = Path(__file__).resolve().parent.parent
_LIVE: dict[int, subprocess.Popen[bytes]] = {}
_REAPED_CPU = [0.0]


def live_pids() -> list[int]:
    """The children that are still running."""
    return list(_LIVE)


def reaped_cpu() -> float:
    """CPU seconds used by children already killed (read just before each kill)."""
    return _REAPED_CPU[0]


def _kill_all() -> None:
    for pid, popen in list(_LIVE.items()):
        _kill(pid, popen)


def _kill(pid: int, popen: subprocess.Popen[bytes]) -> None:
    if pid in _LIVE:
        from ._load import process_cpu

        _REAPED_CPU[0] += process_cpu(pid)
    if popen.poll() is None:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        popen.wait()
    _LIVE.pop(pid, None)


atexit.register(_kill_all)


class ChildError(RuntimeError):
    """A child died, said something unexpected, or did not answer in time."""


class Child:
    """One running child process and its control pipes."""

    def __init__(self, role: str, args: list[str]) -> None:
        self.role = role
        # A blocking call on purpose (see the module docstring); it takes a few ms.
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "bench._child", role, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=_ROOT,
        )
        self.pid = self.popen.pid
        _LIVE[self.pid] = self.popen
        assert self.popen.stdin is not None
        assert self.popen.stdout is not None
        self._in = trio.lowlevel.FdStream(os.dup(self.popen.stdin.fileno()))
        self._out = trio.lowlevel.FdStream(os.dup(self.popen.stdout.fileno()))
        self.popen.stdin.close()
        self.popen.stdout.close()
        self._lines = LineReader(self._out)
        #: The child's ready line (its bound address, if it listens).
        self.ready: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<Child {self.role} pid={self.pid}>"

    async def send(self, *words: object) -> None:
        """Send one command line."""
        line = " ".join(str(w) for w in words) + "\n"
        await self._in.send_all(line.encode())

    async def receive(self, timeout: float = 60.0) -> dict[str, Any]:
        """Return the next JSON line of the child."""
        with trio.move_on_after(timeout) as scope:
            try:
                line = await self._lines.readline()
            except EOFError:
                code = self.popen.poll()
                raise ChildError(f"{self} exited (code {code})") from None
        if scope.cancelled_caught:
            raise ChildError(f"{self} said nothing for {timeout:g} s")
        try:
            value = json.loads(line)
        except ValueError:
            raise ChildError(f"{self} wrote a non-JSON line: {line[:200]!r}") from None
        if not isinstance(value, dict):
            raise ChildError(f"{self} wrote {value!r}")
        if value.get("event") == "error":
            raise ChildError(f"{self} failed: {value.get('detail')}")
        return value

    async def expect(self, event: str, timeout: float = 60.0) -> dict[str, Any]:
        """Return the next line, which must be `event`."""
        value = await self.receive(timeout)
        if value.get("event") != event:
            raise ChildError(f"{self}: expected {event!r}, got {value!r}")
        return value

    def kill(self) -> None:
        """SIGKILL by PID, reap, close the pipes. Idempotent."""
        _kill(self.pid, self.popen)
        for stream in (self._in, self._out):
            with suppress(OSError):
                stream.close()


@asynccontextmanager
async def child(role: str, *args: object, ready_timeout: float = 30.0) -> AsyncIterator[Child]:
    """Start a child, wait for its ready line, and kill it when the block ends."""
    proc = Child(role, [str(a) for a in args])
    try:
        proc.ready = await proc.expect("ready", ready_timeout)
        yield proc
    finally:
        proc.kill()


@asynccontextmanager
async def children(role: str, argsets: Sequence[Sequence[object]]) -> AsyncIterator[list[Child]]:
    """Start several children at once (they import in parallel), then wait for each."""
    procs: list[Child] = []
    try:
        for args in argsets:
            procs.append(Child(role, [str(a) for a in args]))
        for proc in procs:
            proc.ready = await proc.expect("ready", 30.0)
        yield procs
    finally:
        for proc in procs:
            proc.kill()
