"""One task that reads many simulated links, as a server reads its sockets with epoll.

A reader task per link costs a trip through the scheduler per frame: with 99 replicas of a
synchronous master, that is 99 task steps per commit for the acknowledgements on the
master's side, and 99 more for the transactions on the replicas'. The network tells a
reader which links may have something to read (`FramedStream.set_watcher`), and it reads
them all in one step with `receive_nowait`. What each link does with what it reads is its
own (`Watched.read_ready`): a master reads its replicas' links with one (`ReplicaLink`), and
the replicas of a trio run read their masters' with another (`hakit._runtime._follower`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import trio
import trio.lowlevel

if TYPE_CHECKING:
    from ..transports import FramedStream


class Watched(Protocol):
    """What a `LinkReader` reads: a watchable stream, and what to do when it is readable."""

    stream: FramedStream
    #: Set while queued on the reader (so that a link is queued once however often woken).
    queued: bool

    def read_ready(self, now: float) -> None:
        """Read and act on what has arrived by `now`, without waiting; never raise.

        While the link stays read, it reads with ``stream.receive_nowait()`` at least once:
        the reader trusts the `drained` its last call left (nothing in flight to wait for).
        """


#: How a reader starts its task: ``nursery.start_soon``, or `trio.lowlevel.spawn_system_task`.
Spawn = Callable[[Callable[[], Awaitable[None]]], object]


class LinkReader:
    """Reads a set of watchable links from one task (see the module docstring)."""

    __slots__ = ("_abort", "_coming", "_links", "_parked", "_ready", "_running")

    def __init__(self) -> None:
        self._links: set[Watched] = set()
        self._ready: list[Watched] = []
        self._coming: set[Watched] = set()  # links with bytes in flight, not yet due
        self._parked: trio.lowlevel.Task | None = None
        self._running = False
        self._abort = self._abort_park  # made once: a park per step allocates nothing more

    def add(self, link: Watched, spawn: Spawn) -> None:
        """Read `link` from now on (its stream `can_watch`); what is buffered is read first.

        The reader's task is started with `spawn` the first time.
        """
        self._links.add(link)
        # A partial, not a lambda: it is called for every frame sent to the link, and a
        # partial (in C) costs no Python frame of its own.
        link.stream.set_watcher(functools.partial(self._readable, link))
        if not self._running:
            self._running = True
            spawn(self.run)
        self._readable(link)

    def remove(self, link: Watched) -> None:
        """Stop reading `link` (it closed, or its owner reads it itself again)."""
        if link in self._links:
            self._links.discard(link)
            self._coming.discard(link)
            link.stream.set_watcher(None)

    def _readable(self, link: Watched) -> None:
        # Called from inside the network (a peer's send): take note and wake, nothing more.
        if not link.queued:
            link.queued = True
            self._ready.append(link)
            parked = self._parked
            if parked is not None:
                self._parked = None
                trio.lowlevel.reschedule(parked)

    def _abort_park(self, _raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def run(self) -> None:
        """Read whatever links are ready, then wait for the next one (or data coming due)."""
        while True:
            ready, self._ready = self._ready, []
            now = trio.current_time()  # what this step reads arrived by now
            for link in ready:
                link.queued = False
                if link in self._links:
                    link.read_ready(now)
                    stream = link.stream
                    # A read that took all there was left nothing in flight either, and what
                    # is put in flight since woke the watcher: no need to ask when it is due.
                    if not stream.drained and stream.next_due is not None and link in self._links:
                        self._coming.add(link)
            if self._ready:
                # Read again (a link read more than it could take at once) after letting
                # the others run: a checkpoint, as a task per link would have had.
                await trio.lowlevel.checkpoint()
                continue
            due = math.inf
            for link in list(self._coming):
                when = link.stream.next_due
                if when is None:
                    # Nothing in flight any more, though there was when it was read: it came
                    # due during this step (a real clock moves on while the step works) and
                    # another link's send moved it into the buffer, which calls no watcher
                    # (the network delivers lazily); or the link was cut. Read it again: a
                    # cut one reads nothing and is not kept (its heal calls the watcher).
                    self._coming.discard(link)
                    self._readable(link)
                elif when < due:
                    due = when
            if self._ready:
                await trio.lowlevel.checkpoint()
                continue
            self._parked = trio.lowlevel.current_task()
            if due == math.inf:
                await trio.lowlevel.wait_task_rescheduled(self._abort)
                continue
            # Bytes in flight on a link with latency: look again when they are due.
            with trio.move_on_at(due):
                await trio.lowlevel.wait_task_rescheduled(self._abort)
            for link in list(self._coming):
                when = link.stream.next_due
                if when is None or when <= trio.current_time():
                    self._coming.discard(link)
                    self._readable(link)
