"""One task that reads every simulated link of a master, as a server reads its sockets with epoll.

A reader task per link costs a trip through the scheduler per acknowledgement: with 99
replicas acknowledging each synchronous commit, that is 99 task steps per commit on the
master's side alone. The network tells this reader which links may have something to read
(`FramedStream.set_watcher`), and it reads them all in one step with `receive_nowait`.
What each link does with what it reads is its own (`ReplicaLink.read_ready`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio
import trio.lowlevel

if TYPE_CHECKING:
    from ._link import ReplicaLink


class LinkReader:
    """Reads the watchable links of one master (see the module docstring)."""

    __slots__ = ("_abort", "_coming", "_links", "_parked", "_ready", "_running")

    def __init__(self) -> None:
        self._links: set[ReplicaLink] = set()
        self._ready: list[ReplicaLink] = []
        self._coming: set[ReplicaLink] = set()  # links with bytes in flight, not yet due
        self._parked: trio.lowlevel.Task | None = None
        self._running = False
        self._abort = self._abort_park  # made once: a park per step allocates nothing more

    def add(self, link: ReplicaLink, spawn: trio.Nursery) -> None:
        """Read `link` from now on (its stream `can_watch`); what is buffered is read first."""
        self._links.add(link)
        link.stream.set_watcher(lambda: self._readable(link))
        if not self._running:
            self._running = True
            spawn.start_soon(self.run)
        self._readable(link)

    def remove(self, link: ReplicaLink) -> None:
        """Stop reading `link` (it closed)."""
        if link in self._links:
            self._links.discard(link)
            self._coming.discard(link)
            link.stream.set_watcher(None)

    def _readable(self, link: ReplicaLink) -> None:
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
                    if link.stream.next_due is not None and link in self._links:
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
                    self._coming.discard(link)
                elif when < due:
                    due = when
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
