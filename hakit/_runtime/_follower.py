"""A replica's transaction stream applied by the trio run's one replica reader.

A synced replica on a simulated link mostly does one thing per commit: read a `Txns` frame,
apply it, and acknowledge it. With a task per replica that is a trip through the scheduler
per replica per commit: with 99 replicas, over a third of what a synchronous commit cost
(the rest of the work is the same either way). Instead the
replica's task hands its stream to a `LinkReader` shared by every replica of the run (a
system task, so that no node's nursery, cancelled by a crash or a close, takes it down for
the others) and parks. The reader applies and acknowledges what arrives, exactly as the
replica's own loop would (`ReplicaRun._apply_now`), and hands everything else back: the
first event that is not an `Apply` (with the rest of its read), a stop, a read error, or an
unexpected exception, which the replica's task then raises as its own.

Cancelling the parked task (a stop request, a crash, the watchdog) takes the stream back
from the reader at once, so nothing is read for a replica that has stopped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from itertools import chain
from typing import TYPE_CHECKING

import trio
import trio.lowlevel

from ..protocol import RemoteProtocolError
from ..protocol import _replica as rm
from ._link_reader import LinkReader

if TYPE_CHECKING:
    from ..protocol import ReplicaMachine
    from ..transports import FramedStream
    from ._replica_side import ReplicaRun

#: What reading from the master may raise when the link is gone or garbled.
RECEIVE_FAILURES = (
    EOFError,
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    RemoteProtocolError,
)
_READER: trio.lowlevel.RunVar[LinkReader] = trio.lowlevel.RunVar("hakit_replica_reader")


def _reader() -> LinkReader:
    try:
        return _READER.get()
    except LookupError:
        reader = LinkReader()
        _READER.set(reader)
        return reader


def _spawn_system(run: Callable[[], Awaitable[None]]) -> object:
    return trio.lowlevel.spawn_system_task(run, name="hakit replica reader")


class Follower:
    """One replica's stream while the run's replica reader applies it (see the module).

    It acts for its `ReplicaRun` through three of its steps, the same ones the replica's
    own loop takes: ``_feed`` (messages to machine events), ``_apply_now`` (apply and
    acknowledge) and ``_receive_failed`` (a lost link as the machine's `Stopped`).
    """

    __slots__ = (
        "_abort", "_handoff", "_machine", "_reader", "_run", "_task", "queued", "stream",
    )  # fmt: skip

    def __init__(self, run: ReplicaRun, machine: ReplicaMachine, stream: FramedStream) -> None:
        self._run = run
        self._machine = machine
        self.stream = stream
        self.queued = False
        self._task: trio.lowlevel.Task | None = None
        self._reader: LinkReader | None = None  # the run's, while it holds the stream
        self._handoff: Iterator[rm.ReplicaEvent] | BaseException | None = None
        self._abort = self._taken_back  # made once

    async def follow(self) -> Iterator[rm.ReplicaEvent]:
        """Park until the reader hands the stream back; return the events to act on next.

        Raises:
            What reading or applying raised, other than a lost link (which comes back as
            the machine's `Stopped` event).
        """
        self._task = trio.lowlevel.current_task()
        self._reader = _reader()
        self._reader.add(self, _spawn_system)
        await trio.lowlevel.wait_task_rescheduled(self._abort)
        handoff, self._handoff = self._handoff, None
        if isinstance(handoff, BaseException):
            raise handoff
        assert handoff is not None
        return handoff

    def _taken_back(self, _raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        # The replica's task was cancelled while parked: the reader lets go of it now.
        self._let_go()
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _let_go(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.remove(self)

    def _hand_off(self, handoff: Iterator[rm.ReplicaEvent] | BaseException) -> None:
        self._let_go()
        if self._machine.state is rm.ReplicaState.STOPPED and not isinstance(
            handoff, BaseException
        ):
            # The master ended the session (a Detach, a Reject, a promotion elsewhere) or
            # the link broke: close our end now, in the step that read why, as the replica's
            # own loop would have in its step. Left to the replica's task, the close would
            # come a scheduler pass later, in the same pass as the master's own close, and
            # which of the two reached an open end would be trio's choice, not the log's.
            self.stream.close_nowait()
        task, self._task = self._task, None
        if task is not None:
            self._handoff = handoff
            trio.lowlevel.reschedule(task)

    def read_ready(self, now: float) -> None:
        """Apply and acknowledge what has arrived; hand anything else back to the replica."""
        run, machine, stream = self._run, self._machine, self.stream
        apply = rm.Apply
        try:
            while self._task is not None:
                values = stream.receive_nowait()
                if values is None:
                    return
                if len(values) == 1 and type(values[0]) is bytes:
                    # The usual read: one commit's Txns, taken by the machine in one call.
                    taken = machine.take_txns(values[0], now)
                    if taken is not None:
                        stopped = run._apply_now(machine, stream, *taken)
                        if stopped is not None:
                            self._hand_off(iter((stopped,)))
                            return
                        if stream.drained:
                            return  # nothing more to read: the watcher wakes us for more
                        continue
                events = run._feed(machine, values)
                for event in events:
                    if type(event) is not apply:
                        self._hand_off(chain((event,), events))
                        return
                    stopped = run._apply_now(
                        machine, stream, event.entries, event.packed, event.ack
                    )
                    if stopped is not None:
                        self._hand_off(iter((stopped,)))
                        return
                if machine.state is rm.ReplicaState.STOPPED:
                    self._hand_off(iter(()))
                    return
                if stream.drained:
                    return
        except RECEIVE_FAILURES as exc:
            self._hand_off(iter((run._receive_failed(machine, exc),)))
        except BaseException as exc:  # nothing may escape a system task
            # A bug, or a storage raising even KeyboardInterrupt: the replica's own task
            # raises it, as it would have before. Raised here, it would end the whole run.
            self._hand_off(exc)
