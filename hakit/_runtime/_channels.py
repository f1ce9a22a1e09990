"""Message channels on trio: `Channel`, incoming `ChannelMessage`, each node's `ChannelManager`.

The Berkeley DB replication manager's message channels, in hakit's shape: an application
sends messages (one-way) or requests (answered) to another node, to a node by name or
address, or to whichever node is the master now (`EID_MASTER`).

Shape, and why:

* Channel traffic uses connections of its own, never a replication link (Berkeley DB's
  APP_CONNECTION), so application messages never queue behind transactions, nor the reverse.
* A node keeps one outgoing connection per target address, opened on first use and shared by
  every `Channel` of the node; requests on it are numbered, so any number may be outstanding
  and each answer finds its caller. The decisions (ids, expiry, validating answers) are the
  sans-I/O `ChannelMachine`'s; this module moves bytes and wakes callers.
* A caller that finds its connection unread reads it itself until its answer is in,
  routing the other callers' answers on the way; the others park until theirs is in. With
  one request outstanding an answer thus reaches its caller with no task switch. A watcher
  task per connection reads while no caller does (so a peer closing an idle connection is
  seen), and a timer task per connection expires requests at the machine's deadlines (a
  reading caller's read is cancelled then), so a request starts no task. Frames are written
  by whichever task finds the connection idle, together with any frames queued meanwhile,
  so a busy connection is written in batches with no extra task switch.
* Every incoming message runs its handler in a task of its own, so a slow handler holds up
  nothing, and a handler may itself send requests (for instance forward a write to the
  master) without deadlock. The tasks are a pool per incoming connection that take turns
  reading (see `_Incoming`): the task that reads a request hands the reading to an idle task
  and runs the handler itself, so an answer leaves with no task switch and no task started.
"""

from __future__ import annotations

import enum
import inspect
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, overload

import trio

from ..protocol import (
    InvalidArgumentError,
    NodeClosedError,
    NoServerError,
    RemoteProtocolError,
    UnavailableError,
)
from ..protocol import _channel as ch
from ..protocol import _messages as m
from ..protocol._codec import CHANNEL_LIMITS
from ..transports import FramedStream, MemoryAddress, ReceiveBudget, parse_address
from ._events import (
    ChannelConnected,
    ChannelDisconnected,
    ChannelHandlerFailed,
    ChannelRequestTimedOut,
    ChannelUnavailable,
)
from ._security import AuthenticationFailed, open_secure
from ._statistics import ChannelStatistics

if TYPE_CHECKING:
    from ._node import Node


class _Eid(enum.Enum):
    MASTER = -3

    def __repr__(self) -> str:
        return "hakit.EID_MASTER"


#: The target of a channel that always reaches the current master (Berkeley DB's
#: ``DB_EID_MASTER``, -3): re-resolved on every send, and on the master itself it calls the
#: local handler.
EID_MASTER: Final = _Eid.MASTER

#: A message handler: ``async def handler(msg: hakit.ChannelMessage) -> None``.
Handler = Callable[["ChannelMessage"], Awaitable[None]]

#: Unsent bytes one connection may queue before senders wait for the peer to read.
_MAX_UNSENT = 1024 * 1024
#: Bytes asked of the stream per read on a channel connection (both ways: messages are small).
_RECEIVE_SIZE = 64 * 1024
_OPEN = ch.ChannelState.OPEN
_CONTROL = int(ch.ChannelFlags.CONTROL)
_CLOSED = ch.ChannelState.CLOSED
_IO_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class _Origin:
    """Where an incoming message came from, and where its answer goes."""

    __slots__ = ()

    async def answer(self, req_id: int, parts: list[bytes]) -> None:
        """Send the answer to request `req_id` (checked against its flags already)."""
        raise NotImplementedError

    async def fail(self, msg: m.ChannelFail) -> None:
        """Send a failure instead of an answer."""
        raise NotImplementedError


class ChannelMessage:
    """A message received on a channel, as the message handler gets it.

    Attributes:
        parts: the message's parts.
        sender: the name of the node that sent it.
        need_response: whether it is a request, which the handler answers with `respond`.
    """

    __slots__ = (
        "_answered",
        "_flags",
        "_limit",
        "_manager",
        "_origin",
        "_req_id",
        "need_response",
        "parts",
        "sender",
    )

    def __init__(
        self,
        manager: ChannelManager,
        origin: _Origin,
        parts: list[bytes],
        sender: str,
        req_id: int,
        flags: int,
        limit: int,
    ) -> None:
        self.parts = parts
        self.sender = sender
        self.need_response = req_id != 0
        self._manager = manager
        self._origin = origin
        self._req_id = req_id
        self._flags = flags
        self._limit = limit
        self._answered = False

    def __repr__(self) -> str:
        kind = "request" if self.need_response else "message"
        return f"<hakit.ChannelMessage {kind} from {self.sender!r}, {len(self.parts)} part(s)>"

    @property
    def multiple(self) -> bool:
        """Whether the requester accepts an answer of several parts."""
        return bool(self._flags & ch.ChannelFlags.MULTIPLE)

    @property
    def max_response_bytes(self) -> int | None:
        """The largest answer the requester accepts, in bytes (None: any size)."""
        return self._limit if self._flags & ch.ChannelFlags.LIMIT else None

    async def respond(self, *parts: ch.Parts) -> None:
        """Answer the request, once.

        Args:
            *parts: the answer's parts (bytes, or str sent as UTF-8); none is an empty
                answer. A single list or tuple is taken as the list of parts.

        Raises:
            InvalidArgumentError: the message is not a request; it was already answered; a
                part is not bytes or str; or the answer has several parts and the requester
                did not pass ``multiple=True``, or is larger than its
                ``max_response_bytes`` (in these last two cases the requester gets
                `BufferSmallError` instead of the answer).
        """
        if not self.need_response:
            raise InvalidArgumentError(
                f"this message from {self.sender!r} was sent with send_msg and expects no "
                "answer; only a request (send_request) can be answered"
            )
        if self._answered:
            raise InvalidArgumentError(
                f"the request from {self.sender!r} was already answered; a request takes one answer"
            )
        if len(parts) == 1 and type(parts[0]) is bytes:
            data = [parts[0]]  # the common answer, already in shape
        else:
            items: Any = parts
            if len(parts) == 1 and isinstance(parts[0], list | tuple):
                items = parts[0]
            data = ch.to_parts(items, what="answer")
        self._answered = True
        manager = self._manager
        try:
            ch.check_answer(data, self._flags, self._limit)
        except InvalidArgumentError as exc:
            await self._origin.fail(
                m.ChannelFail(
                    manager._node.generation,
                    self._req_id,
                    int(ch.ChannelFailCode.BUFFER_SMALL),
                    f"node {manager._node.name!r} could not send its answer: {exc}",
                )
            )
            raise
        manager._answers_sent += 1
        await self._origin.answer(self._req_id, data)


class _Waiter:
    """One caller of `send_request`, parked until its outcome is in.

    Built on trio's low-level park/reschedule rather than `trio.Event`: it is made and woken
    once per request, and this is the cheapest way trio offers to do that.
    """

    __slots__ = ("done", "error", "scope", "task", "value")

    def __init__(self) -> None:
        self.done = False
        self.task: trio.lowlevel.Task | None = None
        #: The caller's cancel scope while it reads the connection itself (see `_Requester`).
        self.scope: trio.CancelScope | None = None
        self.value: bytes | list[bytes] = b""
        self.error: BaseException | None = None

    def finish(self) -> None:
        self.done = True
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task)
        elif self.scope is not None:  # the caller is reading: stop its read (cancel-safe)
            self.scope.cancel()

    async def wait(self) -> None:
        if self.done:
            await trio.lowlevel.cancel_shielded_checkpoint()  # the outcome is in: keep it
            return
        self.task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self.task = None
        return trio.lowlevel.Abort.SUCCEEDED


class _Outbox:
    """Frames waiting to be written on one stream.

    Whoever sends finds either the stream idle, and writes its frame and every frame queued
    while it writes, or another task writing, and leaves its frame for that task. A write
    interrupted half way (cancelled, or failed) leaves the stream without frame boundaries:
    the outbox is then broken and `on_broken` tears the connection down.
    """

    __slots__ = ("_drained", "_flushing", "_frames", "_on_broken", "_send_all", "_size", "broken")

    def __init__(self, framed: FramedStream, on_broken: Callable[[str], None]) -> None:
        # The stream's own send_all: one coroutine frame less for every write to suspend in.
        self._send_all = framed.stream.send_all
        self._on_broken = on_broken
        self._frames: list[bytes] = []
        self._size = 0
        self._flushing = False
        self._drained: trio.Event | None = None
        #: Why the stream can no longer be written, once it cannot.
        self.broken: str | None = None

    def push(self, frame: bytes) -> bool:
        """Queue a frame; return True when nobody is writing and the caller must `flush`."""
        if self.broken is not None:
            return False
        self._frames.append(frame)
        self._size += len(frame)
        return not self._flushing

    async def send(self, frame: bytes) -> None:
        """Queue a frame and see it written, or joined to the write in progress.

        Joining a write in progress returns at once, without a checkpoint: the caller (an
        answer, a one-way message) has nothing to wait for, and a yield per message would
        cost more than the message. It waits only when the peer reads too slowly.
        """
        if self.push(frame):
            await self.flush()
        elif self._size > _MAX_UNSENT:  # the peer reads slower than we write: wait for it
            if self._drained is None:
                self._drained = trio.Event()
            await self._drained.wait()

    async def flush(self) -> None:
        """Write every queued frame, and those queued meanwhile, in as few writes as can be."""
        self._flushing = True
        try:
            while self._frames and self.broken is None:
                frames = self._frames
                data = frames[0] if len(frames) == 1 else b"".join(frames)
                self._frames = []
                self._size = 0
                await self._send_all(data)
        except _IO_ERRORS as exc:
            self._break(f"sending failed: {exc}")
        except BaseException:
            self._break("a send was interrupted")
            raise
        finally:
            self._flushing = False
            if self._drained is not None:
                self._drained.set()
                self._drained = None

    def _break(self, detail: str) -> None:
        if self.broken is None:
            self.broken = detail
            self._frames = []
            self._size = 0
            self._on_broken(detail)


class _Requester:
    """The requester's side of one channel connection (or of the local loopback).

    Answers are read by whichever task finds the connection unread: a caller that has sent
    its request and finds nobody reading reads for itself, routes every answer that comes
    (waking the callers they belong to) until its own is in, then leaves. With one request
    outstanding the answer thus reaches its caller with no task switch, as in a bare
    send-then-receive loop. The watcher task (`ChannelManager._receive_loop`) reads while no
    caller does, so a peer that closes, or a late answer, is seen while the connection idles.

    Its timer task sleeps until the machine's earliest deadline and expires what is due, so
    a parked request needs no cancel scope of its own; a request due before the timer's
    deadline (the first after an idle spell, or a shorter timeout) re-arms it.
    """

    __slots__ = ("address", "dropped", "framed", "machine", "outbox", "reading", "rearm",
                 "scope", "timer_deadline", "waiters", "watcher")  # fmt: skip

    def __init__(self, address: str, machine: ch.ChannelMachine) -> None:
        self.address = address
        self.machine = machine
        self.waiters: dict[int, _Waiter] = {}
        self.framed: FramedStream | None = None  # None: the local loopback
        self.outbox: _Outbox | None = None
        self.scope = trio.CancelScope()
        self.dropped = False
        self.timer_deadline = math.inf
        self.rearm = trio.Event()
        #: Whether a task (a caller, or the watcher) is reading the connection.
        self.reading = False
        #: The watcher task, while it is parked (see `_receive_loop`).
        self.watcher: trio.lowlevel.Task | None = None

    @property
    def usable(self) -> bool:
        return not self.dropped and self.machine.state is ch.ChannelState.OPEN

    async def park_watcher(self) -> None:
        """Park the watcher until a caller leaves `_request` (`resume_watcher`)."""
        self.watcher = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort_watcher_wait)

    def _abort_watcher_wait(self, _: object) -> trio.lowlevel.Abort:
        self.watcher = None
        return trio.lowlevel.Abort.SUCCEEDED

    def resume_watcher(self) -> None:
        """Let the watcher look again, if it is parked."""
        task = self.watcher
        if task is not None:
            self.watcher = None
            trio.lowlevel.reschedule(task)


class _Turn(enum.Enum):
    READ = "read"  #: the job of reading the connection


#: What a worker of an incoming connection is handed: its turn to read, a handler to run on
#: a message, or None: leave (the connection ended, or enough workers are idle).
_Job = tuple[Handler, ChannelMessage] | _Turn | None

#: Idle workers one incoming connection keeps for the next requests; beyond this, a worker
#: that finishes its handler ends.
_MAX_IDLE_WORKERS = 16


class _Incoming(_Origin):
    """One connection another node opened to send us messages, and its worker tasks.

    Workers live in the connection's nursery and take turns: one reads while the others run
    handlers or wait, idle, for a job. A reader that gets requests hands each but the last to
    an idle worker (starting one if none is idle), hands its turn to read to another, and
    runs the last handler itself. A request is thus answered by the task that read it, with
    no task switch and, once the connection is warm, no task started; and a handler that
    blocks holds up nothing, since the reading has already moved on.

    Ending the connection is the reader's work (`ChannelManager._end_incoming`). The
    handlers still running are then cancelled: their answers could not be delivered, and a
    handler that never returns must not outlive the requester that asked for it.

    At most ``NodeLimits.max_handlers_per_connection`` handlers run at once (`active`); the
    reader waits for one to finish before it starts another, so a requester that floods the
    connection waits on its own requests instead of filling the node with tasks.
    """

    __slots__ = ("active", "close_detail", "closed", "framed", "idle", "max_active", "node",
                 "nursery", "outbox", "peer", "reads", "slot")  # fmt: skip

    def __init__(self, node: Node, peer: str, framed: FramedStream) -> None:
        self.node = node
        self.peer = peer
        self.framed = framed
        self.outbox = _Outbox(framed, self._broken)
        self.nursery: trio.Nursery | None = None
        self.idle: list[_Worker] = []
        self.closed = False
        #: Handlers handed out and not finished yet, and how many may be.
        self.active = 0
        self.max_active = node.limits.max_handlers_per_connection
        #: Set by a finishing handler when the reader waits for `active` to go down.
        self.slot: trio.Event | None = None
        #: Batches of frames read so far: the idle watchdog compares it between its looks.
        self.reads = 0
        #: Why the watchdog closed the connection, which the reader reports.
        self.close_detail: str | None = None

    async def wait_slot(self) -> None:
        """Wait until fewer than `max_active` handlers run."""
        while self.active >= self.max_active:
            self.slot = trio.Event()
            await self.slot.wait()

    def handler_done(self) -> None:
        self.active -= 1
        if self.slot is not None and self.active < self.max_active:
            self.slot.set()
            self.slot = None

    def close_for(self, detail: str) -> None:
        """End the connection from outside the reader (the watchdog): close its stream."""
        if not self.closed and self.nursery is not None:
            self.close_detail = detail
            self.nursery.start_soon(self._close_stream)

    def give(self, job: _Job, work: Callable[[_Incoming, _Job], Awaitable[None]]) -> None:
        """Hand `job` to an idle worker, or to a new one (`work`) if none is idle."""
        if self.idle:
            worker = self.idle.pop()
            worker.job = job
            trio.lowlevel.reschedule(worker.task)
        else:
            assert self.nursery is not None
            self.nursery.start_soon(work, self, job, name=work.__qualname__)

    def _broken(self, detail: str) -> None:
        # A write failed or was interrupted: the stream lost its frame boundaries. Closing
        # it ends the read in progress (ClosedResourceError), and the reader ends the rest.
        if not self.closed and self.nursery is not None:
            self.nursery.start_soon(self._close_stream)

    async def _close_stream(self) -> None:
        with trio.CancelScope(shield=True):
            await self.framed.aclose()

    async def answer(self, req_id: int, parts: list[bytes]) -> None:
        if self.closed:
            return  # the requester lost the connection; it already got UnavailableError
        await self.outbox.send(m.encode_channel_reply(self.node.generation, req_id, parts))

    async def fail(self, msg: m.ChannelFail) -> None:
        if self.closed:
            return
        await self.outbox.send(msg.encode())


class _Worker:
    """A worker task of an incoming connection, as it waits in the connection's idle list.

    Built on trio's low-level park/reschedule: a worker parks once per request.
    """

    __slots__ = ("idle", "job", "task")

    def __init__(self, idle: list[_Worker]) -> None:
        self.idle = idle
        self.task = trio.lowlevel.current_task()
        self.job: _Job = None

    async def park(self) -> _Job:
        """Wait, idle, until a job is handed over (`_Incoming.give`)."""
        self.idle.append(self)
        await trio.lowlevel.wait_task_rescheduled(self._abort)
        job, self.job = self.job, None
        return job

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self.idle.remove(self)  # still listed: whoever takes a worker reschedules it at once
        return trio.lowlevel.Abort.SUCCEEDED


class _LocalOrigin(_Origin):
    """A message this node sent itself (the master channel on the master, or its own name)."""

    __slots__ = ("loopback", "manager")

    def __init__(self, manager: ChannelManager, loopback: _Requester) -> None:
        self.manager = manager
        self.loopback = loopback

    async def answer(self, req_id: int, parts: list[bytes]) -> None:
        await self._deliver(m.ChannelReply(self.manager._node.generation, req_id, parts))

    async def fail(self, msg: m.ChannelFail) -> None:
        await self._deliver(msg)

    async def _deliver(self, msg: m.Message) -> None:
        loopback = self.loopback
        self.manager._on_events(loopback, loopback.machine.receive(msg))
        await trio.lowlevel.checkpoint()


class Channel(trio.abc.AsyncResource):
    """A way to send messages and requests to one node, or to whichever is the master.

    Create with `Node.channel`. Channels are light: the node keeps one connection per target
    and shares it between all its channels. Usable as ``async with node.channel(t) as ch:``.
    """

    def __init__(self, manager: ChannelManager, target: str | _Eid) -> None:
        self._manager = manager
        self._target = target
        self._timeout = ch.DEFAULT_CHANNEL_TIMEOUT
        self._closed = False
        self._in_flight = 0
        self._idle: trio.Event | None = None

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<hakit.Channel {self._manager._node.name!r} -> {self._target!r}{state}>"

    @property
    def target(self) -> str | _Eid:
        """The node name, address, or `EID_MASTER` this channel sends to."""
        return self._target

    @property
    def timeout(self) -> float:
        """The default timeout of `send_request`, in seconds."""
        return self._timeout

    def set_timeout(self, seconds: float) -> None:
        """Set the default timeout of `send_request` (initially 5 seconds).

        Raises:
            InvalidArgumentError: not a positive number of seconds up to about 71 minutes
                (4294.967295 s).
        """
        value = ch.check_timeout(seconds, zero_means_default=False)
        if value is None:
            raise InvalidArgumentError("a channel's default timeout must be a number, not None")
        self._timeout = value

    async def send_msg(self, parts: ch.Parts) -> None:
        """Send a one-way message; returns once the transport took it.

        No answer comes back, and none is waited for. A node without a message handler drops
        it (and counts it as unhandled); only on this node itself, when the channel leads
        here, is that known at once.

        Args:
            parts: one part or a list of parts; bytes, or str sent as UTF-8.

        Raises:
            UnavailableError: no master is known (`EID_MASTER`), or the target cannot be
                reached.
            NoServerError: the channel leads to this node, which has no handler.
            InvalidArgumentError: a part is not bytes or str, or the channel is closed.
        """
        data = ch.to_parts(parts)
        self._enter()
        try:
            await self._manager._send_msg(self._target, data, self._timeout)
        finally:
            self._leave()

    @overload
    async def send_request(
        self,
        parts: ch.Parts,
        timeout: float | None = None,
        multiple: Literal[False] = False,
        *,
        max_response_bytes: int | None = None,
    ) -> bytes: ...

    @overload
    async def send_request(
        self,
        parts: ch.Parts,
        timeout: float | None,
        multiple: Literal[True],
        *,
        max_response_bytes: int | None = None,
    ) -> list[bytes]: ...

    @overload
    async def send_request(
        self,
        parts: ch.Parts,
        timeout: float | None = None,
        *,
        multiple: Literal[True],
        max_response_bytes: int | None = None,
    ) -> list[bytes]: ...

    @overload
    async def send_request(
        self,
        parts: ch.Parts,
        timeout: float | None = None,
        multiple: bool = False,
        *,
        max_response_bytes: int | None = None,
    ) -> bytes | list[bytes]: ...

    async def send_request(
        self,
        parts: ch.Parts,
        timeout: float | None = None,
        multiple: bool = False,
        *,
        max_response_bytes: int | None = None,
    ) -> bytes | list[bytes]:
        """Send a request and wait for its answer.

        Args:
            parts: one part or a list of parts; bytes, or str sent as UTF-8.
            timeout: seconds to wait for the answer; None or 0 means the channel's default
                (`set_timeout`). At most 4294.967295 s (about 71 minutes).
            multiple: accept an answer of several parts, returned as a list.
            max_response_bytes: the largest answer accepted, in bytes (None: any size).

        Returns:
            The answer: bytes (empty if the handler answered with no part), or the list of
            parts with ``multiple=True``.

        Raises:
            ChannelTimeoutError: no answer within the timeout (a later answer is dropped).
            UnavailableError: no master is known (`EID_MASTER`), the target cannot be
                reached, or the connection died while the request waited.
            NoServerError: the target has no message handler.
            BufferSmallError: the answer has several parts and `multiple` is false, or it is
                larger than `max_response_bytes`.
            NoResponseError: the handler returned without answering.
            RemoteHandlerError: the handler raised (its type and message are attributes).
            InvalidArgumentError: a bad part, timeout, `multiple` or `max_response_bytes`,
                or the channel is closed.
        """
        # Checked inline for the common arguments: this runs once per request.
        data = [parts] if type(parts) is bytes else ch.to_parts(parts)
        wait = None if timeout is None else ch.check_timeout(timeout)
        if multiple is not False and multiple is not True:
            raise InvalidArgumentError(f"multiple must be True or False, got {multiple!r}")
        limit = None if max_response_bytes is None else ch.check_limit(max_response_bytes)
        self._enter()
        try:
            return await self._manager._request(
                self._target, data, self._timeout if wait is None else wait, multiple, limit
            )
        finally:
            self._leave()

    async def aclose(self) -> None:
        """Close the channel: later sends raise; requests in flight finish first.

        The node's connections stay open for its other channels; they close with the node.
        """
        self._closed = True
        if self._in_flight:
            self._idle = trio.Event()
            await self._idle.wait()
        else:
            await trio.lowlevel.checkpoint()

    def _enter(self) -> None:
        if self._closed:
            raise InvalidArgumentError(f"the channel to {self._target!r} is closed")
        self._in_flight += 1

    def _leave(self) -> None:
        self._in_flight -= 1
        if not self._in_flight and self._idle is not None:
            self._idle.set()
            self._idle = None


class ChannelManager:
    """A node's message channels: its handler, its connections, and their counters."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._handler: Handler | None = None
        #: The control service of an operated node (hakit node), for requests flagged
        #: CONTROL; None: such requests fail with NO_SERVER.
        self.control: Handler | None = None
        self._out: dict[str, _Requester] = {}
        self._connect_locks: dict[str, trio.Lock] = {}
        self._incoming: set[_Incoming] = set()
        #: Bytes of unfinished frames the incoming connections hold, all counted.
        self._budget = ReceiveBudget(node.limits.receive_budget)
        self._local: _Requester | None = None
        self._guarded = False
        #: Set when the node's nursery is cancelled (seen by the guard task): a flag, because
        #: asking the cancel scope costs a clock read on every message.
        self._closing = False
        #: Target strings already parsed as addresses (parsing costs more than a request).
        self._addresses: set[str] = set()
        # counters (see ChannelStatistics)
        self._messages_sent = 0
        self._requests_sent = 0
        self._answers_received = 0
        self._requests_failed = 0
        self._timed_out = 0
        self._late = 0
        self._messages_received = 0
        self._requests_received = 0
        self._answers_sent = 0
        self._handler_errors = 0
        self._unhandled = 0

    # -- public entry points (through Node) ----------------------------------------------------
    def set_dispatch(self, handler: Handler | None) -> None:
        """Install (or remove, with None) the node's message handler."""
        if handler is not None:
            if not callable(handler):
                raise InvalidArgumentError(
                    f"the message handler must be an async function, got {type(handler).__name__}"
                )
            if inspect.isfunction(handler) and not inspect.iscoroutinefunction(handler):
                raise InvalidArgumentError(
                    f"the message handler {handler.__name__}() must be an async function "
                    "(async def handler(msg): ...)"
                )
        self._handler = handler

    def channel(self, target: str | _Eid) -> Channel:
        """Make a channel to `target` (validated now, resolved on every send)."""
        if target is EID_MASTER:
            return Channel(self, target)
        if not isinstance(target, str) or not target:
            raise InvalidArgumentError(
                f"a channel target is a node name, an address, or hakit.EID_MASTER; got {target!r}"
            )
        node = self._node
        if target == node.name or node._resolve_peer(target) is not None:
            return Channel(self, target)
        try:
            address = parse_address(target)
        except ValueError:
            raise InvalidArgumentError(
                f"{target!r} is neither a node known to {node.name!r} nor an address "
                '("host:port", "/path", "unix:/path" or "mem:name")'
            ) from None
        if isinstance(address, MemoryAddress) and node._network is None:
            raise InvalidArgumentError(
                f"{target} is a memory address, and node {node.name!r} is not in a cluster"
            )
        return Channel(self, target)

    def statistics(self) -> ChannelStatistics:
        """A snapshot of the counters."""
        pending = sum(r.machine.pending for r in self._out.values())
        if self._local is not None:
            pending += self._local.machine.pending
        return ChannelStatistics(
            messages_sent=self._messages_sent,
            requests_sent=self._requests_sent,
            answers_received=self._answers_received,
            requests_failed=self._requests_failed,
            requests_timed_out=self._timed_out,
            late_answers_dropped=self._late,
            messages_received=self._messages_received,
            requests_received=self._requests_received,
            answers_sent=self._answers_sent,
            handler_errors=self._handler_errors,
            unhandled=self._unhandled,
            pending_requests=pending,
            outgoing_connections=len(self._out),
            incoming_connections=len(self._incoming),
        )

    # -- routing -------------------------------------------------------------------------------
    def _route(self, target: str | _Eid) -> str:
        """The address to send to now; ``""`` for this node itself."""
        node = self._node
        if target is EID_MASTER:
            master = node._current_master()
            if master is None:
                detail = f"node {node.name!r} knows no master"
                node._record(ChannelUnavailable(node._now(), node.name, "the master", detail))
                raise UnavailableError(f"no master to send to: {detail}")
            return "" if master == node._address else master
        assert isinstance(target, str)
        if target == node.name:
            return ""
        address = node._resolve_peer(target)
        if address is not None:
            return address
        if target in self._addresses:
            return "" if target == node._address else target
        try:
            parse_address(target)
            self._addresses.add(target)
        except ValueError:
            detail = f"node {target!r} is not known to {node.name!r} (not a cluster member, "
            detail += "attached replica or master)"
            node._record(ChannelUnavailable(node._now(), node.name, target, detail))
            raise UnavailableError(detail, target=target) from None
        return "" if target == node._address else target

    def _loopback(self) -> _Requester:
        local = self._local
        if local is None:
            node = self._node
            machine = ch.ChannelMachine(
                node=node.name, cluster=node.cluster_name, target=f"node {node.name!r} (local)"
            )
            machine.receive(machine.hello())  # the loopback is open from the start
            local = self._local = _Requester("", machine)
            self._start(self._run_timer, local)
        return local

    # -- sending ---------------------------------------------------------------------------------
    async def _send_msg(self, target: str | _Eid, parts: list[bytes], timeout: float) -> None:
        self._ensure_guard()
        address = self._route(target)
        node = self._node
        if not address:
            handler = self._handler
            if handler is None:
                raise NoServerError(
                    f"node {node.name!r} has no message handler (set_msg_dispatch)",
                    target=node.name,
                )
            self._messages_sent += 1
            self._local_deliver(handler, 0, 0, 0, parts, self._loopback())
            await trio.lowlevel.checkpoint()
            return
        requester = await self._connection(address, trio.current_time() + timeout)
        outbox = requester.outbox
        assert outbox is not None
        self._messages_sent += 1
        await outbox.send(requester.machine.message(parts).encode())
        if outbox.broken is not None:
            raise UnavailableError(
                f"the message to {address} may not have been sent: {outbox.broken}",
                target=address,
            )

    async def _request(
        self,
        target: str | _Eid,
        parts: list[bytes],
        timeout: float,
        multiple: bool,
        limit: int | None,
    ) -> bytes | list[bytes]:
        # Once per request: every step here costs, so the common case goes straight through.
        if self._closing or not self._guarded:
            self._ensure_guard()
        address = self._route(target)
        now = trio.current_time()
        if not address:
            return await self._request_locally(parts, now, timeout, multiple, limit)
        requester = self._out.get(address)
        if requester is None or requester.dropped or requester.machine.state is not _OPEN:
            requester = await self._connection(address, now + timeout)
        req_id, frame = requester.machine.request_frame(parts, now, timeout, multiple, limit)
        waiter = _Waiter()
        requester.waiters[req_id] = waiter
        self._messages_sent += 1
        self._requests_sent += 1
        if now + timeout < requester.timer_deadline:
            requester.rearm.set()
        outbox = requester.outbox
        assert outbox is not None
        try:
            if outbox.push(frame):
                await outbox.flush()
            if waiter.done:  # answered while the request was written: keep the outcome
                await trio.lowlevel.cancel_shielded_checkpoint()
            elif not requester.reading:  # nobody reads the connection: read it ourselves
                await self._read_until_answered(requester, waiter)
            else:  # waiter.wait(), inline: one coroutine less on every resumption
                waiter.task = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(waiter._abort)
        finally:
            # Whether woken or cancelled, or done reading, the watcher may wait for this
            # task to leave (see `_receive_loop`).
            if requester.watcher is not None:
                requester.resume_watcher()
            if not waiter.done:  # cancelled: an answer coming later is dropped
                requester.machine.abandon(req_id)
                requester.waiters.pop(req_id, None)
        if waiter.error is not None:
            raise waiter.error
        return waiter.value

    async def _request_locally(
        self, parts: list[bytes], now: float, timeout: float, multiple: bool, limit: int | None
    ) -> bytes | list[bytes]:
        """`_request` to this node itself: the handler runs here, in a task of its own."""
        loopback = self._loopback()
        machine = loopback.machine
        msg = machine.request(parts, now=now, timeout=timeout, multiple=multiple, limit=limit)
        waiter = _Waiter()
        loopback.waiters[msg.req_id] = waiter
        self._messages_sent += 1
        self._requests_sent += 1
        if now + timeout < loopback.timer_deadline:
            loopback.rearm.set()
        try:
            self._local_request(loopback, msg)
            await waiter.wait()
        finally:
            if not waiter.done:  # cancelled: an answer coming later is dropped
                machine.abandon(msg.req_id)
                loopback.waiters.pop(msg.req_id, None)
        if waiter.error is not None:
            raise waiter.error
        return waiter.value

    def _local_request(self, loopback: _Requester, msg: m.ChannelMsg) -> None:
        handler = self._handler
        node = self._node
        if handler is None:
            self._unhandled += 1
            fail = m.ChannelFail(
                node.generation,
                msg.req_id,
                int(ch.ChannelFailCode.NO_SERVER),
                f"node {node.name!r} has no message handler (set_msg_dispatch)",
            )
            self._on_events(loopback, loopback.machine.receive(fail))
            return
        self._local_deliver(handler, msg.req_id, msg.flags, msg.limit, msg.parts, loopback)

    def _local_deliver(
        self,
        handler: Handler,
        req_id: int,
        flags: int,
        limit: int,
        parts: list[bytes],
        loopback: _Requester,
    ) -> None:
        origin = _LocalOrigin(self, loopback)
        message = ChannelMessage(self, origin, parts, self._node.name, req_id, flags, limit)
        self._received(message)
        self._start(self._run_handler, handler, message)

    def _on_events(self, requester: _Requester, events: Sequence[ch.ChannelEvent]) -> None:
        """Hand each outcome to its waiting caller."""
        waiters = requester.waiters
        for event in events:
            if isinstance(event, ch.Answered):
                waiter = waiters.pop(event.req_id, None)
                if waiter is not None:
                    self._answers_received += 1
                    waiter.value = event.value
                    waiter.finish()
            elif isinstance(event, ch.Failed | ch.TimedOut):
                waiter = waiters.pop(event.req_id, None)
                if waiter is None:
                    continue
                if isinstance(event, ch.TimedOut):
                    self._timed_out += 1
                    node = self._node
                    node._record(
                        ChannelRequestTimedOut(
                            node._now(), node.name, requester.machine.target, event.error.timeout
                        )
                    )
                else:
                    self._requests_failed += 1
                waiter.error = event.error
                waiter.finish()
            elif isinstance(event, ch.LateAnswer):
                self._late += 1

    # -- outgoing connections ----------------------------------------------------------------------
    async def _connection(self, address: str, deadline: float) -> _Requester:
        requester = self._out.get(address)
        if requester is not None and requester.usable:
            return requester
        lock = self._connect_locks.get(address)
        if lock is None:
            lock = self._connect_locks[address] = trio.Lock()
        # One connect per address at a time: concurrent first sends share its result.
        with trio.move_on_at(deadline):
            async with lock:
                requester = self._out.get(address)
                if requester is not None and requester.usable:
                    return requester
                return await self._open(address, deadline)
        raise self._unavailable(address, "no channel connection within the timeout")

    def _unavailable(self, address: str, detail: str) -> UnavailableError:
        node = self._node
        node._record(ChannelUnavailable(node._now(), node.name, address, detail))
        return UnavailableError(f"cannot reach {address}: {detail}", target=address)

    async def _open(self, address: str, deadline: float) -> _Requester:
        node = self._node
        machine = ch.ChannelMachine(
            node=node.name, cluster=node.cluster_name, target=address, generation=node.generation
        )
        framed: FramedStream | None = None
        try:
            try:
                # Answers are small: reads of 64 KiB cost less than the default 256 KiB (a
                # buffer that size is allocated for every read, and shrunk to what came).
                framed = await open_secure(
                    address,
                    node._security,
                    network=node._network,
                    source=node.name,
                    max_frame_size=node.max_frame_size,
                    receive_size=_RECEIVE_SIZE,
                    limits=CHANNEL_LIMITS,
                )
                await framed.send(machine.hello().encode())
                values = await framed.receive()
                events = [e for v in values for e in machine.receive_value(v)]
            except EOFError:
                raise self._unavailable(address, "the peer closed the connection at once") from None
            except AuthenticationFailed as exc:
                raise self._unavailable(address, str(exc)) from None
            except (*_IO_ERRORS, RemoteProtocolError, ValueError) as exc:
                why = str(exc) or str(exc.__cause__ or type(exc).__name__)  # TLS: in the cause
                raise self._unavailable(address, why) from None
            refused = [e for e in events if isinstance(e, ch.Refused)]
            if refused or machine.state is not ch.ChannelState.OPEN:
                raise self._unavailable(address, refused[0].detail if refused else "no hello")
            requester = _Requester(address, machine)
            self._start(self._receive_loop, requester, framed)  # raises if the node closes
        except BaseException:
            if framed is not None:
                with trio.CancelScope(shield=True):
                    await framed.aclose()
            raise
        requester.framed = framed
        requester.outbox = _Outbox(framed, lambda detail: self._drop(requester, detail))
        self._out[address] = requester
        assert machine.peer is not None
        node._record(ChannelConnected(node._now(), node.name, machine.peer, address, False))
        return requester

    async def _read_until_answered(self, requester: _Requester, waiter: _Waiter) -> None:
        """A caller's turn to read its connection: route answers until its own is in.

        The read is cancel-safe: cancelled (by the caller's own scopes, or by `_Waiter.finish`
        when the request times out or the connection is dropped), it leaves every byte not
        yet decoded for the next reader.
        """
        requester.reading = True
        framed = requester.framed
        assert framed is not None
        try:
            with trio.CancelScope() as scope:
                waiter.scope = scope
                while not waiter.done:
                    self._route_answers(requester, await framed.receive())
                    if requester.machine.state is _CLOSED:
                        self._drop(requester, requester.machine.close_detail)
        except EOFError:
            self._drop(requester, "the peer closed the connection")
        except (*_IO_ERRORS, RemoteProtocolError) as exc:
            self._drop(requester, str(exc) or type(exc).__name__)
        finally:
            waiter.scope = None
            requester.reading = False

    def _route_answers(self, requester: _Requester, values: list[Any]) -> int:
        """Hand each answer in `values` to its caller; return how many callers were woken.

        Raises:
            RemoteProtocolError: a value is not a message the requester's side accepts.
        """
        machine = requester.machine
        waiters = requester.waiters
        woken = 0
        for value in values:
            answer = machine.take_answer(value)  # the common case, in few steps
            if answer is None:
                waiting = len(waiters)
                self._on_events(requester, machine.receive_value(value))
                woken += waiting - len(waiters)
                continue
            waiter = waiters.pop(answer[0], None)
            if waiter is not None:
                self._answers_received += 1
                waiter.value = answer[1]
                waiter.done = True  # waiter.finish(), inline; a reading caller is this task
                task = waiter.task
                if task is not None:
                    waiter.task = None
                    trio.lowlevel.reschedule(task)
                    woken += 1
        return woken

    async def _receive_loop(self, requester: _Requester, framed: FramedStream) -> None:
        """The watcher of an outgoing connection: read it whenever no caller does."""
        machine = requester.machine
        detail = "the connection was closed"
        try:
            with requester.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._run_timer, requester)
                    waiters = requester.waiters
                    deferred = False
                    try:
                        while True:
                            if requester.reading:  # a caller reads: wait until it leaves
                                await requester.park_watcher()
                                deferred = False
                                continue
                            if waiters and not deferred:
                                # A caller that just wrote its request is about to read for
                                # itself once its write's checkpoint returns: give it that
                                # scheduling round. A caller whose write must wait for the
                                # peer does not come back in time, and this task reads
                                # meanwhile, so answers are never left unread behind a write.
                                deferred = True
                                await trio.lowlevel.cancel_shielded_checkpoint()
                                continue
                            deferred = False
                            requester.reading = True
                            try:
                                values = await framed.receive()
                            finally:
                                requester.reading = False
                            woken = self._route_answers(requester, values)
                            if machine.state is _CLOSED:
                                detail = machine.close_detail
                                break
                            if woken:
                                # Wait until a caller it woke leaves `_request`: that caller
                                # then finds the connection unread, and reads the answer to
                                # its next request itself, with no task switch. Reading at
                                # once instead would put this task between every answer and
                                # its caller again.
                                await requester.park_watcher()
                    except EOFError:
                        detail = "the peer closed the connection"
                    except (*_IO_ERRORS, RemoteProtocolError) as exc:
                        detail = str(exc) or type(exc).__name__
                    nursery.cancel_scope.cancel()
        finally:
            self._drop(requester, detail)
            with trio.CancelScope(shield=True):
                await framed.aclose()

    async def _run_timer(self, requester: _Requester) -> None:
        """Expire the requests of one connection when their deadlines pass."""
        machine = requester.machine
        while True:
            requester.timer_deadline = deadline = machine.next_deadline
            requester.rearm = rearm = trio.Event()
            with trio.move_on_at(deadline):
                await rearm.wait()
                continue  # a request due earlier came in: sleep until its deadline
            self._on_events(requester, machine.tick(trio.current_time()))

    def _drop(self, requester: _Requester, detail: str) -> None:
        """End an outgoing connection: fail its waiting requests, forget it."""
        requester.scope.cancel()
        if requester.dropped:
            return
        requester.dropped = True
        if self._out.get(requester.address) is requester:
            del self._out[requester.address]
        node = self._node
        events = requester.machine.connection_lost(detail)
        if self._node_closing():
            self._fail_closing(requester, events)
        else:
            self._on_events(requester, list(events))
        node._record(
            ChannelDisconnected(
                node._now(),
                node.name,
                requester.machine.peer or requester.address,
                requester.address,
                False,
                detail,
                len(events),
            )
        )

    def _node_closing(self) -> bool:
        nursery = self._node._nursery
        return self._closing or nursery is None or nursery.cancel_scope.cancel_called

    def _fail_closing(self, requester: _Requester, events: list[ch.Failed]) -> None:
        # Our own node is going away: that is what the callers should hear, not a lost peer.
        for event in events:
            waiter = requester.waiters.pop(event.req_id, None)
            if waiter is not None:
                waiter.error = NodeClosedError(
                    f"node {self._node.name!r} was closed while the request waited"
                )
                waiter.finish()

    # -- incoming connections ------------------------------------------------------------------
    async def serve(self, framed: FramedStream, hello: m.ChannelHello) -> None:
        """Serve a connection another node opened with `hello`, until it closes."""
        node = self._node
        answer = ch.decide_channel_hello(
            hello, node=node.name, cluster=node.cluster_name, generation=node.generation
        )
        limit = node.limits.max_channel_connections
        if not isinstance(answer, m.ChannelFail) and len(self._incoming) >= limit:
            answer = m.ChannelFail(
                node.generation,
                0,
                int(ch.ChannelFailCode.REFUSED),
                f"node {node.name!r} has too many channel connections "
                f"(limit {limit}, NodeLimits.max_channel_connections)",
            )
        if isinstance(answer, m.ChannelFail):
            node._refuse(hello.node or "unnamed node", answer.detail)
            await node._send_and_close(framed, answer.encode())
            return
        framed.receive_size = _RECEIVE_SIZE  # requests are small, as answers are (see `_open`)
        framed.set_limits(CHANNEL_LIMITS)
        framed.share_budget(self._budget)  # nothing is buffered yet: cannot fail
        incoming = _Incoming(node, hello.node, framed)
        self._incoming.add(incoming)
        node._record(ChannelConnected(node._now(), node.name, hello.node, None, True))
        try:
            async with trio.open_nursery() as nursery:
                incoming.nursery = nursery
                nursery.start_soon(self._watch_incoming, incoming)
                await incoming.outbox.send(answer.encode())
                await self._work(incoming, _Turn.READ)  # this task is the first worker
        finally:
            # The reader ends the connection; this is for a hello that could not be sent.
            await self._end_incoming(incoming, "the connection was closed")

    async def _work(self, incoming: _Incoming, job: _Job) -> None:
        """One worker task of an incoming connection (see `_Incoming`)."""
        worker = _Worker(incoming.idle)
        while True:
            if job is _Turn.READ:
                job = await self._read(incoming)
            if job is None or job is _Turn.READ:
                return
            handler, message = job
            try:
                await self._run_handler(handler, message)
            finally:
                incoming.handler_done()
            if incoming.closed or len(incoming.idle) >= _MAX_IDLE_WORKERS:
                return
            job = await worker.park()

    async def _read(self, incoming: _Incoming) -> _Job:
        """Take a turn reading: return the first handler to run once the turn is handed on.

        Returns:
            The handler and message this worker runs; None once the connection ended.
        """
        receive = incoming.framed.receive
        work = self._work
        node = self._node
        mine: _Job = None
        detail = "the connection was closed"
        try:
            while True:
                values = await receive()
                incoming.reads += 1
                for value in values:
                    req_id, flags, limit, parts = ch.read_request(value)
                    if self._closing:
                        continue  # no handler may start; the requester sees the connection close
                    # A control request goes to the control service of an operated node
                    # (hakit node), never to the application's handler.
                    handler = self.control if flags & _CONTROL else self._handler
                    if handler is None:
                        self._unhandled += 1
                        if req_id:
                            await incoming.fail(
                                m.ChannelFail(
                                    node.generation,
                                    req_id,
                                    int(ch.ChannelFailCode.NO_SERVER),
                                    f"node {node.name!r} has no control service (run it with "
                                    "hakit node)"
                                    if flags & _CONTROL
                                    else f"node {node.name!r} has no message handler "
                                    "(set_msg_dispatch)",
                                )
                            )
                        continue
                    message = ChannelMessage(
                        self, incoming, parts, incoming.peer, req_id, flags, limit
                    )
                    self._messages_received += 1
                    if req_id:
                        self._requests_received += 1
                    if incoming.active >= incoming.max_active:
                        # As many handlers run as the limit allows: start the one in hand,
                        # then read no further until one finishes (back pressure).
                        if mine is not None:
                            incoming.give(mine, work)
                            mine = None
                        await incoming.wait_slot()
                    incoming.active += 1
                    if mine is not None:
                        incoming.give(mine, work)
                    mine = (handler, message)
                if mine is not None:
                    incoming.give(_Turn.READ, work)
                    return mine
        except EOFError:
            detail = "the peer closed the connection"
        except (*_IO_ERRORS, RemoteProtocolError) as exc:
            detail = str(exc) or type(exc).__name__
        except BaseException:
            await self._end_incoming(incoming, detail)
            raise
        if mine is not None:  # read before the bad frame: it still runs, as every message does
            incoming.give(mine, work)
        await self._end_incoming(incoming, detail)
        return None

    async def _end_incoming(self, incoming: _Incoming, detail: str) -> None:
        """End an incoming connection: send idle workers away, record it, close the stream."""
        if incoming.closed:
            return
        incoming.closed = True
        idle = incoming.idle
        while idle:
            worker = idle.pop()
            worker.job = None
            trio.lowlevel.reschedule(worker.task)
        if incoming.nursery is not None:
            # The handlers still running can no longer answer: cancel them (and the watchdog).
            incoming.nursery.cancel_scope.cancel()
        node = self._node
        if self._node_closing():
            detail = f"node {node.name!r} is closing"
        elif incoming.close_detail is not None:
            detail = incoming.close_detail
        elif incoming.outbox.broken is not None:
            detail = incoming.outbox.broken
        self._incoming.discard(incoming)
        node._record(
            ChannelDisconnected(node._now(), node.name, incoming.peer, None, True, detail, 0)
        )
        with trio.CancelScope(shield=True):
            await incoming.framed.aclose()

    async def _watch_incoming(self, incoming: _Incoming) -> None:
        """Close an incoming connection that idles too long, or stalls in the middle of a frame.

        It looks a few times per timeout rather than arming a deadline per read: reads are
        far more frequent than looks, and a counter costs less than a cancel scope.
        """
        limits = self._node.limits
        idle_timeout = limits.channel_idle_timeout
        frame_timeout = limits.frame_timeout
        period = min(idle_timeout, frame_timeout) / 4
        framed = incoming.framed
        seen = incoming.reads
        quiet_since = trio.current_time()
        while not incoming.closed:
            await trio.sleep(period)
            now = trio.current_time()
            if incoming.reads != seen:
                seen = incoming.reads
                quiet_since = now
            reading = incoming.active < incoming.max_active  # else the reader waits, not the peer
            partial = framed.partial_since
            if reading and partial is not None and now - partial >= frame_timeout:
                incoming.close_for(
                    f"a frame did not arrive whole within {frame_timeout:g} s "
                    "(NodeLimits.frame_timeout)"
                )
                return
            if incoming.active == 0 and now - quiet_since >= idle_timeout:
                incoming.close_for(f"idle for {idle_timeout:g} s (NodeLimits.channel_idle_timeout)")
                return

    def _received(self, message: ChannelMessage) -> None:
        self._messages_received += 1
        if message.need_response:
            self._requests_received += 1

    async def _run_handler(self, handler: Handler, message: ChannelMessage) -> None:
        node = self._node
        code = ch.ChannelFailCode.NO_RESPONSE
        try:
            await handler(message)
        except Exception as exc:  # the application's error: report it, the node carries on
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            code = ch.ChannelFailCode.HANDLER_FAILED
            self._handler_errors += 1
            node._record(ChannelHandlerFailed(node._now(), node.name, message.sender, detail))
        else:
            if not message.need_response or message._answered:
                return
            detail = f"the message handler of node {node.name!r} returned without answering"
            self._handler_errors += 1
            node._record(
                ChannelHandlerFailed(
                    node._now(), node.name, message.sender, "returned without answering a request"
                )
            )
        if message.need_response and not message._answered:
            message._answered = True
            fail = m.ChannelFail(node.generation, message._req_id, int(code), detail)
            await message._origin.fail(fail)

    # -- node lifetime ---------------------------------------------------------------------------
    def _ensure_guard(self) -> None:
        """On first use, start a task that fails every waiting request when the node closes.

        Raises:
            NodeClosedError: the node is closed.
        """
        if not self._guarded:
            self._start(self._guard)
            self._guarded = True
        elif self._closing:
            raise NodeClosedError(f"node {self._node.name!r} is closed")

    def _start(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Start a task in the node's nursery.

        Raises:
            NodeClosedError: the node is closing or closed.
        """
        nursery = self._node._nursery
        if nursery is None or self._closing:
            raise NodeClosedError(f"node {self._node.name!r} is closed")
        nursery.start_soon(fn, *args, name=fn.__qualname__)  # a given name saves a lookup

    async def _guard(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self._closing = True
            for requester in list(self._out.values()):
                self._drop(requester, f"node {self._node.name!r} is closing")
            local = self._local
            if local is not None:
                self._local = None
                self._fail_closing(local, local.machine.connection_lost("the node is closing"))
            self._guarded = False
