"""The simulated network of one cluster: in-kernel byte streams with seeded faults.

Every ``mem:`` connection is a pair of one-way pipes. A chunk written to a pipe goes into its
*in-flight* queue with a due time (now + the link's latency + seeded jitter, never earlier
than the chunk before it, so a link never reorders, as TCP never does) and moves to the
receiver's buffer once it is due and the link is not cut.

Each fault does to hakit what the real fault does to a TCP connection:

* a **partition** or **hold** is a pulled cable, not a reset: chunks stay in flight, neither
  delivered nor lost, and the end of the stream waits behind them, so neither side can tell a
  cut from a silent peer (only hakit's own timeouts end such a link); new connections across
  it fail (``EHOSTUNREACH``).
* **latency** delays every chunk; jitter never reorders a link.
* **loss** is not a missing message: TCP retransmits. Each transmission of a chunk is lost
  with probability ``p``; a lost chunk is sent again after a retransmission timeout (0.2 s,
  doubling), and everything behind it waits (head-of-line blocking). After
  `MAX_RETRANSMITS` losses of one chunk in a row the sender gives up and the connection is
  **reset** at both ends (``ECONNRESET``: reads and writes raise
  `trio.BrokenResourceError`), as a kernel does when its retransmissions run out.
* a **crash** of a node is its process dying: the kernel closes its sockets, so each peer
  reads end of stream (FIN) or, where the dead end had unread data, a reset (RST), once that
  reaches it; its listener disappears (``ECONNREFUSED``) and nothing it sent after the crash
  exists. `SimulatedNetwork.revive` lets the name be used again.

Delivery is computed lazily, without background tasks: a pipe is *settled* (due chunks
moved) whenever someone looks at it, and every pipe is settled just before the cut state
changes. Between two changes a pipe's cut state is constant, so lazy delivery gives exactly
the times an eager one would, and the network needs no nursery. Time is trio's clock, so
everything is deterministic under `trio.testing.MockClock`.

A *tracer* (the cluster's event log) can watch every frame: sent, held, delivered or dropped.
With a tracer the network reports deliveries in time order (a heap of due chunks is drained
before anything later is reported), and every random draw comes from a generator seeded by
the link's identity, so one link's faults never depend on how trio interleaved the others.
"""

from __future__ import annotations

import enum
import errno
import heapq
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import trio

from hakit.protocol._codec import size_prefix

#: How often one chunk may be lost in a row before the sender gives up and resets.
MAX_RETRANSMITS = 6
#: The first retransmission timeout (Linux's minimum RTO); it doubles on each loss.
RETRANSMIT_TIMEOUT = 0.2
# Frames larger than this are not split out for the tracer (a peer sending garbage).
_TRACE_MAX_FRAME = 64 * 1024 * 1024


class _Signal(enum.Enum):
    # In-band markers travelling behind the data, so a cut holds them too.
    EOF = "EOF"  # the writer called send_eof(): the reader sees end of stream
    CLOSE = "CLOSE"  # the writer closed its end: end of stream, and the reader's sends break


class _Reset:
    """An in-band reset (RST): the reader's reads and writes break, unread data is lost."""

    __slots__ = ("detail", "lost", "sent")

    def __init__(
        self, detail: str, lost: tuple[tuple[int, bytes | None], ...] = (), sent: float = 0.0
    ) -> None:
        self.detail = detail
        self.lost = lost  # frames of the chunk whose loss caused the reset
        self.sent = sent  # when that chunk was sent


_Item = bytes | _Signal | _Reset
# A traced frame: its sequence number on the pipe, and its payload (None for a marker).
_Mark = tuple[int, bytes | None]
_Entry = tuple[float, _Item, tuple[_Mark, ...], float]  # due, item, frames, sent


@dataclass(frozen=True, slots=True)
class Route:
    """Where a traced frame travels: one direction of one connection.

    Attributes:
        sender: the node name of the sending end (None for an anonymous client).
        receiver: the node name of the receiving end (None for an anonymous client).
        link: the connection's name, ``"<client>><server>#<n>"`` (n counts the
            connections made from that client to that server).
        outbound: True from the connecting end to the listening end.
    """

    sender: str | None
    receiver: str | None
    link: str
    outbound: bool


class NetworkTracer(Protocol):
    """What a `SimulatedNetwork` reports to (the cluster's event log implements it)."""

    def message(
        self,
        action: str,
        time: float,
        route: Route,
        seq: int,
        frame: bytes | None,
        signal: str,
        sent: float,
        due: float | None,
        retransmits: int,
        detail: str,
    ) -> None:
        """A frame (or a marker: `signal` names it) was sent, held, delivered or dropped.

        `sent` is when it was sent, `due` (on "sent") when it is to arrive, `seq` its number
        on `route` (-1 for the connection's opening).
        """

    def passed(self, time: float, route: Route, seq: int, frames: tuple[bytes, ...]) -> None:
        """Frames (their payloads, numbered from `seq` on) were sent and delivered at `time`.

        The same as a "sent" and then a "delivered" `message` for each, in one call: what a
        healthy link without latency does with nearly every frame.
        """

    def fault(self, time: float, action: str, detail: str) -> None:
        """A fault was set or lifted (partition, heal, hold, release, latency, loss)."""


@dataclass(frozen=True, slots=True)
class NetworkStatistics:
    """A snapshot of a `SimulatedNetwork`.

    Attributes:
        links_open: connections with at least one end still open.
        bytes_delivered: bytes that reached the receiving end's buffer, since the network
            was created.
        bytes_held: bytes sent across a cut (partition or hold) and waiting for it to heal.
        bytes_dropped: bytes that will never be read: sent to a closed or reset end, or
            discarded by a reset or a crash.
        retransmissions: chunk transmissions lost to `set_loss` and sent again.
        resets: connections reset (by loss, or by a crash with unread data).
    """

    links_open: int
    bytes_delivered: int
    bytes_held: int
    bytes_dropped: int = 0
    retransmissions: int = 0
    resets: int = 0


class _Pipe:
    """One direction of a link: the writer's in-flight chunks and the reader's buffer."""

    __slots__ = (
        "_abort",
        "broken",
        "buffer",
        "buffered",
        "eof",
        "in_flight",
        "last_due",
        "link",
        "partial",
        "reader_closed",
        "reset",
        "reverse",
        "rng",
        "route",
        "seq",
        "unframed",
        "waiter",
        "watcher",
    )

    def __init__(self, link: _Link, rng: random.Random, route: Route) -> None:
        self.link = link
        self.rng = rng
        self.route = route
        self.reverse: _Pipe = self  # set by _Link once both pipes exist
        self.in_flight: deque[_Entry] = deque()
        self.buffer: deque[bytes] = deque()
        self.buffered = 0
        self.last_due = -math.inf
        self.eof = False  # end of stream reached the reader
        self.reset: str | None = None  # a reset reached the reader: why
        self.broken = False  # the reader's close (or a reset) reached the writer
        self.reader_closed = False
        self.waiter: trio.lowlevel.Task | None = None  # the reader, parked until data moves
        #: Called instead of waking a parked reader, for a reader that never parks here (one
        #: task reading many links, told which ones to look at: `MemoryStream.set_watcher`).
        self.watcher: Callable[[], None] | None = None
        self._abort = self._abort_wait  # made once: a wait per frame allocates nothing
        # tracing: the next frame's sequence number and the bytes of a frame begun
        self.seq = 0
        self.partial = b""
        self.unframed = False

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            trio.lowlevel.reschedule(waiter)
        elif self.watcher is not None:
            self.watcher()

    def _abort_wait(self, _raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        self.waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def wait(self) -> Awaitable[None]:
        """Park the reading task until `wake` (a cancellation point, as an Event's wait is).

        Parks the task itself rather than on a fresh `trio.Event`: a busy link waits once
        per frame, and an Event (with its parking lot) per wait is garbage that lives for a
        whole round trip. Not itself a coroutine, for the same reason: it hands back trio's.
        """
        self.waiter = trio.lowlevel.current_task()
        return trio.lowlevel.wait_task_rescheduled(self._abort)  # noqa: ASYNC105


class _Link:
    """One connection: its pipes, the node names at its ends, its faults and cut state."""

    __slots__ = (
        "blocked",
        "ends",
        "jitter",
        "latency",
        "loss",
        "nodes",
        "now",
        "open_ends",
        "resetting",
        "to_client",
        "to_server",
        "unblocked_at",
    )

    def __init__(
        self,
        nodes: frozenset[str] | None,
        seed: str,
        source: str | None,
        name: str,
        label: str,
        now: Callable[[], float],
    ) -> None:
        self.nodes = nodes
        #: The clock of the trio run that opened the link (see `SimulatedNetwork._transmit`).
        self.now = now
        self.blocked = False
        self.unblocked_at = -math.inf
        self.open_ends = 2
        self.resetting = False  # a reset is on its way (loss ran out of retransmissions)
        self.ends: list[MemoryStream] = []
        self.latency = 0.0
        self.jitter = 0.0
        self.loss = 0.0
        # One generator per direction, seeded from the link's identity rather than drawn
        # from a shared one: jitter on a link then does not depend on how the scheduler
        # interleaved traffic on other links.
        self.to_server = _Pipe(self, random.Random(f"{seed}>"), Route(source, name, label, True))
        self.to_client = _Pipe(self, random.Random(f"{seed}<"), Route(name, source, label, False))
        self.to_server.reverse = self.to_client
        self.to_client.reverse = self.to_server


class MemoryStream(trio.abc.HalfCloseableStream):
    """One end of a ``mem:`` connection (returned by `SimulatedNetwork.connect` and accept).

    Attributes:
        local_name: the node name at this end (None for an anonymous client).
        remote_name: the node name at the other end (None for an anonymous client).
        drained: set by each `receive_nowait` that returned bytes or None: True when it left
            nothing to read at this end (no bytes buffered or in flight, no end of stream
            waiting behind them), so that a call now would return None. Anything arriving
            later calls the watcher (`set_watcher`). False before the first such call.
    """

    def __init__(
        self,
        network: SimulatedNetwork,
        incoming: _Pipe,
        outgoing: _Pipe,
        local_name: str | None,
        remote_name: str | None,
    ) -> None:
        self.local_name = local_name
        self.remote_name = remote_name
        self.drained = False
        self._network = network
        self._in = incoming
        self._out = outgoing
        self._closed = False
        self._eof_sent = False
        self._sending = False
        self._receiving = False

    def __repr__(self) -> str:
        return f"<MemoryStream {self.local_name} -> {self.remote_name}>"

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send bytes to the peer; they arrive after the network's latency, or after a heal.

        Raises:
            trio.BusyResourceError: another task is sending on this stream.
            trio.ClosedResourceError: this end was closed, or `send_eof` was called.
            trio.BrokenResourceError: the peer closed its end (once its close arrived here),
                or the connection was reset.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            self._check_can_send()
            if data:
                self._network._transmit(self._out, bytes(data))
        finally:
            self._sending = False

    def send_nowait(self, data: bytes) -> None:
        """Send bytes at once, without a checkpoint (a simulated link never blocks a send).

        The buffers are unbounded, so there is nothing to wait for. For a caller that yields
        elsewhere in its loop (a link's sender waits for work, a replica for the next frame):
        `send_all`'s schedule point would cost a trip through the scheduler per frame, which
        is most of a small frame's cost on a busy network.

        Raises:
            The same errors as `send_all`.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        out = self._out
        if self._closed or self._eof_sent or out.broken or self._in.in_flight:
            # It raises, or settles what is in flight to us (the peer's close may be there).
            self._check_can_send()
        if data:
            self._network._transmit(out, data)

    async def wait_send_all_might_not_block(self) -> None:
        """Return at once: the buffers are unbounded, so `send_all` never blocks."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("the stream is closed")

    async def send_eof(self) -> None:
        """Close the sending direction: the peer reads end of stream after the data sent.

        Calling it again is a no-op.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("the stream is closed")
        if not self._eof_sent:
            self._eof_sent = True
            self._network._transmit(self._out, _Signal.EOF)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Wait for bytes from the peer and return up to `max_bytes` of them.

        Returns:
            The bytes, or ``b""`` at end of stream (the peer closed or sent EOF, and every
            byte sent before has been returned).

        Raises:
            trio.BusyResourceError: another task is receiving or waiting (`wait_readable`) on
                this stream.
            trio.ClosedResourceError: this end was closed, before or during the call.
            trio.BrokenResourceError: the connection was reset (``ECONNRESET``).
        """
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        # A task parked in wait_readable is the pipe's waiter too: waiting here would take
        # its place, and it would never be woken.
        if self._receiving or self._in.waiter is not None:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            pipe = self._in
            network = self._network
            # One schedule point per call, as trio wants: the checkpoint when something is
            # there to return, else the wait itself (a wait is a checkpoint too).
            waited = False
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("the stream is closed")
                if pipe.in_flight:
                    network._settle(pipe, trio.current_time())
                if pipe.reset is not None or pipe.buffered or pipe.eof:
                    if not waited:
                        waited = True
                        await trio.lowlevel.checkpoint()
                        continue  # look again: the state may have changed meanwhile
                    if pipe.reset is not None:
                        raise trio.BrokenResourceError(f"connection reset: {pipe.reset}")
                    if pipe.buffered:
                        return _take(pipe, max_bytes)
                    return b""
                waited = True
                if pipe.in_flight and not pipe.link.blocked:
                    # Data in flight: wake when the first chunk is due. No timeout scope
                    # otherwise (only a send, close, heal or release can help): a scope
                    # per read is most of a read's cost on a busy network.
                    with trio.move_on_at(pipe.in_flight[0][0]):
                        await pipe.wait()
                else:
                    await pipe.wait()
        finally:
            self._receiving = False

    def receive_nowait(self, max_bytes: int | None = None) -> bytes | None:
        """Return what `receive_some` would return now, or None if it would have to wait.

        No checkpoint: for a reader that waits elsewhere (one task serving many links,
        woken through `set_watcher`). Sets `drained`, so that such a reader knows without
        another call whether there is more.

        Raises:
            The errors of `receive_some`.
        """
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        if self._closed:
            raise trio.ClosedResourceError("the stream is closed")
        pipe = self._in
        if pipe.in_flight:
            self._network._settle(pipe, trio.current_time())
        if pipe.reset is not None:
            raise trio.BrokenResourceError(f"connection reset: {pipe.reset}")
        if pipe.buffered:
            buffer = pipe.buffer
            if len(buffer) == 1 and (max_bytes is None or max_bytes >= pipe.buffered):
                # The usual read of a busy link: one chunk, taken whole (`_take`'s first case).
                pipe.buffered = 0
                self.drained = not pipe.in_flight and not pipe.eof
                return buffer.popleft()
            data = _take(pipe, max_bytes)
            self.drained = not pipe.buffered and not pipe.in_flight and not pipe.eof
            return data
        if pipe.eof:
            self.drained = False  # the end of stream stays to be read, by every call
            return b""
        self.drained = not pipe.in_flight
        return None

    @property
    def readable(self) -> bool:
        """Whether `receive_nowait` would return something (or raise) now."""
        pipe = self._in
        if pipe.in_flight:
            self._network._settle(pipe, trio.current_time())
        return self._closed or pipe.reset is not None or pipe.buffered > 0 or pipe.eof

    def wait_readable(self) -> Awaitable[None]:
        """Wait until `receive_nowait` may find something (a cancellation point).

        Data, end of stream, a reset, a heal or this end's close wakes it, as it wakes
        `receive_some`; so does the first chunk in flight coming due. A reader that reads
        with `receive_nowait` and waits here parks on trio's own trap, with no coroutine of
        this stream's in between.

        Raises:
            trio.BusyResourceError: another task is receiving or waiting on this stream.
            trio.ClosedResourceError: this end was closed.
        """
        pipe = self._in
        if self._receiving or pipe.waiter is not None:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        if self._closed:
            raise trio.ClosedResourceError("the stream is closed")
        if pipe.in_flight and not pipe.link.blocked:
            return self._wait_due(pipe)
        return pipe.wait()

    async def _wait_due(self, pipe: _Pipe) -> None:
        # Data in flight: wake when the first chunk is due (or anything else happens).
        with trio.move_on_at(pipe.in_flight[0][0]):
            await pipe.wait()

    @property
    def next_due(self) -> float | None:
        """When the first chunk in flight to this end becomes readable (trio time).

        None when nothing is in flight, or the link is cut (a heal calls the watcher).
        """
        pipe = self._in
        if pipe.in_flight and not pipe.link.blocked:
            return pipe.in_flight[0][0]
        return None

    def set_watcher(self, watcher: Callable[[], None] | None) -> None:
        """Have `watcher()` called whenever something may have become readable at this end.

        Data, end of stream, a reset, a heal, a release or this end's close: each calls it
        once (a task parked in `receive_some` is woken instead, as before). It runs inside
        whatever sent or changed the network, so it must only take note (queue the stream,
        wake its reader), never read or send. None stops the calls.
        """
        self._in.watcher = watcher

    async def aclose(self) -> None:
        """Close this end; the peer reads end of stream once the close reaches it."""
        self._close()
        await trio.lowlevel.checkpoint()

    def close_nowait(self) -> None:
        """Close this end at once, as `aclose` does, without its checkpoint.

        For a reader that serves many links from one task step and ends one of them there
        (closing a simulated link never blocks).
        """
        self._close()

    def _check_can_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the stream is closed")
        if self._eof_sent:
            raise trio.ClosedResourceError("cannot send after send_eof()")
        if self._in.in_flight:
            # The peer's close notice travels on the incoming pipe: settle it to learn.
            self._network._settle(self._in, trio.current_time())
        if self._out.broken:
            if self._in.reset is not None:
                raise trio.BrokenResourceError(f"connection reset: {self._in.reset}")
            raise trio.BrokenResourceError("the peer closed the connection")

    def _close(self, crash: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        network = self._network
        incoming = self._in
        unread = incoming.buffered > 0 or any(
            isinstance(entry[1], bytes) for entry in incoming.in_flight
        )
        if crash and unread and incoming.reset is None:
            # A dying process's socket with unread data is reset by its kernel (RST).
            network._resets += 1
            network._transmit(self._out, _Reset(f"{self.local_name} crashed"))
        else:
            network._transmit(self._out, _Signal.CLOSE)
        why = f"{self.local_name} crashed" if crash else "the receiving end was closed"
        network._drop_buffer(incoming)
        incoming.reader_closed = True
        # Data still in flight towards us can never be read: drop it now, so it is not
        # reported as held; the markers stay, they still tell us the peer's state.
        kept: deque[_Entry] = deque()
        for entry in incoming.in_flight:
            if isinstance(entry[1], bytes):
                network._dropped(incoming, entry, why)
            else:
                kept.append(entry)
        incoming.in_flight = kept
        incoming.wake()  # a task blocked in receive_some gets ClosedResourceError
        link = incoming.link
        link.open_ends -= 1
        if link.open_ends == 0:
            network._links.pop(link, None)


def _take(pipe: _Pipe, max_bytes: int | None) -> bytes:
    buffer = pipe.buffer
    if max_bytes is None or max_bytes >= pipe.buffered:
        data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
        buffer.clear()
        pipe.buffered = 0
        return data
    parts: list[bytes] = []
    wanted = max_bytes
    while wanted:
        chunk = buffer[0]
        if len(chunk) <= wanted:
            parts.append(buffer.popleft())
            wanted -= len(chunk)
        else:
            parts.append(chunk[:wanted])
            buffer[0] = chunk[wanted:]
            wanted = 0
    pipe.buffered -= max_bytes
    return b"".join(parts)


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """Accepts ``mem:`` connections made to one name of a `SimulatedNetwork`.

    Attributes:
        name: the name it listens on.
    """

    def __init__(self, network: SimulatedNetwork, name: str) -> None:
        self.name = name
        self._network = network
        self._queue: deque[MemoryStream] = deque()
        self._waiter: trio.Event | None = None
        self._closed = False
        self._accepting = False

    def __repr__(self) -> str:
        return f"<MemoryListener mem:{self.name}>"

    async def accept(self) -> MemoryStream:
        """Wait for the next connection and return this side's stream.

        Raises:
            trio.BusyResourceError: another task is accepting on this listener (refused,
                as by socket listeners, so that code tested on ``mem:`` also works on TCP).
            trio.ClosedResourceError: the listener was closed, before or during the call.
        """
        if self._accepting:
            raise trio.BusyResourceError("another task is already accepting on this listener")
        self._accepting = True
        try:
            await trio.lowlevel.checkpoint()
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("the listener is closed")
                if self._queue:
                    return self._queue.popleft()
                self._waiter = trio.Event()
                await self._waiter.wait()
        finally:
            self._accepting = False

    async def aclose(self) -> None:
        """Stop listening: free the name, and close connections not yet accepted."""
        self._shut()
        await trio.lowlevel.checkpoint()

    def _shut(self, crash: bool = False) -> None:
        if not self._closed:
            self._closed = True
            if self._network._listeners.get(self.name) is self:
                del self._network._listeners[self.name]
            self._wake()
            while self._queue:
                self._queue.popleft()._close(crash=crash)

    def _enqueue(self, stream: MemoryStream) -> None:
        self._queue.append(stream)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None


def _group(names: str | Iterable[str], what: str) -> frozenset[str]:
    group = frozenset((names,)) if isinstance(names, str) else frozenset(names)
    for name in group:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what}: node names must be non-empty strings, not {name!r}")
    return group


def _pair(a: str, b: str, what: str) -> frozenset[str]:
    for name in (a, b):
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what}: node names must be non-empty strings, not {name!r}")
    if a == b:
        raise ValueError(f"{what}: a node has no link with itself ({a!r})")
    return frozenset((a, b))


def _pairs(a: str | Iterable[str], b: str | Iterable[str], what: str) -> set[frozenset[str]]:
    group_a = _group(a, what)
    group_b = _group(b, what)
    return {frozenset((x, y)) for x in group_a for y in group_b if x != y}


def _names(group: str | Iterable[str]) -> str:
    return group if isinstance(group, str) else "{" + ", ".join(sorted(group)) + "}"


def _check_latency(mean: float, jitter: float) -> None:
    for label, value in (("mean", mean), ("jitter", jitter)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"latency {label} must be a number of seconds, not {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"latency {label} must be a finite number >= 0, not {value!r}")
    if jitter > mean:
        raise ValueError(
            f"latency jitter ({jitter!r}) must not exceed the mean ({mean!r}): "
            "a delay is drawn from [mean - jitter, mean + jitter]"
        )


class SimulatedNetwork:
    """The in-kernel network of a cluster: named listeners, links and seeded faults.

    Deterministic: every random draw (jitter, loss) comes from generators seeded by `seed`
    and the link's identity, and all times come from trio's clock. Every method must be
    called from inside the trio run that uses the network. The network may serve several
    runs one after the other, but a connection belongs to the run that opened it: its
    streams read that run's clock.

    Args:
        seed: the seed of the latency jitter and of the losses.
        latency: the default ``(mean, jitter)`` of every link, in seconds (see
            `set_latency`); links of anonymous clients always use it.
        tracer: told of every frame and fault (the cluster's event log).
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        latency: tuple[float, float] = (0.0, 0.0),
        tracer: NetworkTracer | None = None,
    ) -> None:
        _check_latency(*latency)
        self.seed = seed
        self.tracer = tracer
        self._listeners: dict[str, MemoryListener] = {}
        # Insertion-ordered (a dict used as a set) so that wake-ups happen in a
        # reproducible order.
        self._links: dict[_Link, None] = {}
        self._cuts: set[frozenset[str]] = set()
        self._holds: set[frozenset[str]] = set()
        self._default_latency = (float(latency[0]), float(latency[1]))
        self._latencies: dict[frozenset[str], tuple[float, float]] = {}
        self._losses: dict[frozenset[str], float] = {}
        self._down: set[str] = set()
        self._connections: dict[tuple[str | None, str], int] = {}
        # The payloads the tracer was last given for a chunk: a master sends the same
        # chunk (one commit's frame) to every replica, so it is cut up once, not per link.
        self._split_memo: tuple[bytes, tuple[bytes, ...]] = (b"", ())
        self._bytes_delivered = 0
        self._bytes_dropped = 0
        self._retransmissions = 0
        self._resets = 0
        # With a tracer: chunks in flight by due time, so deliveries are reported in order.
        self._due: list[tuple[float, int, _Pipe]] = []
        self._due_count = 0

    def __repr__(self) -> str:
        return (
            f"<SimulatedNetwork seed={self.seed} listeners={sorted(self._listeners)} "
            f"links={len(self._links)}>"
        )

    # -- listeners and connections -------------------------------------------------------

    def is_listening(self, name: str) -> bool:
        """Whether some node listens on ``mem:<name>``."""
        return name in self._listeners

    def listen(self, name: str) -> MemoryListener:
        """Start accepting connections to ``mem:<name>``.

        Raises:
            OSError: the name is already taken (errno ``EADDRINUSE``), or the node of that
                name has crashed and was not revived (``ENETDOWN``).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a listener name must be a non-empty string, not {name!r}")
        if name in self._down:
            raise OSError(errno.ENETDOWN, f"node {name} has crashed")
        if name in self._listeners:
            raise OSError(errno.EADDRINUSE, f"address mem:{name} is already in use")
        listener = MemoryListener(self, name)
        self._listeners[name] = listener
        return listener

    async def connect(self, name: str, *, source: str | None = None) -> trio.abc.Stream:
        """Connect to the listener on ``mem:<name>``.

        Args:
            name: the listener's name.
            source: the connecting node's name; the link between `source` and `name` is
                subject to partitions, holds, latency and loss. Without one the link is
                never cut and has the default latency.

        Setting up a connection is instant (latency delays bytes, not the handshake), and
        the connection is queued for the listener like a socket's backlog: this returns
        before the listener accepts it.

        Returns:
            This side's stream; the other side is returned by the listener's ``accept()``.

        Raises:
            ConnectionRefusedError: nothing listens on `name`.
            OSError: `source` and `name` are partitioned (or held) apart, or `source` has
                crashed.
        """
        await trio.lowlevel.checkpoint()
        if source is not None and source in self._down:
            raise OSError(errno.ENETDOWN, f"node {source} has crashed")
        listener = self._listeners.get(name)
        if listener is None:
            raise ConnectionRefusedError(
                errno.ECONNREFUSED, f"connection refused: nothing listens on mem:{name}"
            )
        nodes = None if source is None else frozenset((source, name))
        if nodes is not None and nodes in self._cuts:
            raise OSError(errno.EHOSTUNREACH, f"network partitioned between {source} and {name}")
        if nodes is not None and nodes in self._holds:
            raise OSError(errno.EHOSTUNREACH, f"network link between {source} and {name} is held")
        key = (source, name)
        index = self._connections.get(key, 0)
        self._connections[key] = index + 1
        label = f"{source or '?'}>{name}#{index}"
        # The run's clock, read straight: a link lives and dies in the run that opened it
        # (its tasks, its times), while the network itself may outlive that run.
        clock = trio.lowlevel.current_clock().current_time
        link = _Link(nodes, f"{self.seed}/{source!r}/{name!r}/{index}", source, name, label, clock)
        link.latency, link.jitter = self._latency_of(nodes)
        link.loss = self._losses.get(nodes, 0.0) if nodes is not None else 0.0
        self._links[link] = None
        client = MemoryStream(self, link.to_client, link.to_server, source, name)
        server = MemoryStream(self, link.to_server, link.to_client, name, source)
        link.ends = [client, server]
        if self.tracer is not None:
            now = trio.current_time()
            self._advance(now)
            route = link.to_server.route
            for action in ("sent", "delivered"):
                self.tracer.message(action, now, route, -1, None, "CONNECT", now, now, 0, "")
        listener._enqueue(server)
        return client

    # -- faults ------------------------------------------------------------------------

    def partition(self, a: str | Iterable[str], b: str | Iterable[str]) -> None:
        """Cut every link between a node of `a` and a node of `b`, in both directions.

        Like a pulled cable (not a reset): bytes sent across the cut are held, neither
        delivered nor lost, until `heal`; new connections across it fail with `OSError`
        (``EHOSTUNREACH``). hakit notices only through its own timeouts.

        Args:
            a: a node name, or an iterable of node names.
            b: a node name, or an iterable of node names.
        """
        pairs = _pairs(a, b, "partition")
        self._change(lambda: self._cuts.update(pairs), "partition", f"{_names(a)} | {_names(b)}")

    def heal(self) -> None:
        """Remove every partition; held bytes are delivered, in order. Holds stay."""
        self._change(self._cuts.clear, "heal", "")

    def hold(self, a: str, b: str) -> None:
        """Cut the link between nodes `a` and `b` like `partition`, independently of it.

        What TCP sees is the same as a partition of that one pair: the bytes wait in flight,
        nobody is told. Only `release` (not `heal`) lifts a hold.
        """
        pair = _pair(a, b, "hold")
        self._change(lambda: self._holds.add(pair), "hold", f"{a} | {b}")

    def release(self, a: str, b: str) -> None:
        """Lift the hold between `a` and `b`; held bytes are delivered unless still cut."""
        pair = _pair(a, b, "release")
        self._change(lambda: self._holds.discard(pair), "release", f"{a} | {b}")

    def set_latency(
        self, a: str | Iterable[str], b: str | Iterable[str], mean: float, jitter: float = 0.0
    ) -> None:
        """Delay every chunk sent from now on between `a` and `b`, both ways.

        Each chunk takes a delay drawn (seeded) from ``[mean - jitter, mean + jitter]``
        seconds, as a longer or busier route would; a chunk is never delivered before one
        sent earlier on the same connection (TCP keeps order), so jitter shows as bunching,
        never as reordering.

        Args:
            a: a node name, or an iterable of node names.
            b: a node name, or an iterable of node names.
            mean: the mean delay in seconds.
            jitter: the largest deviation from the mean, at most `mean`.

        Raises:
            ValueError: a negative, infinite or non-numeric value, or ``jitter > mean``.
        """
        _check_latency(mean, jitter)
        pairs = _pairs(a, b, "set_latency")
        value = (float(mean), float(jitter))
        for pair in pairs:
            self._latencies[pair] = value
        for link in self._links:
            if link.nodes in pairs:
                link.latency, link.jitter = value
        self._note("latency", f"{_names(a)} | {_names(b)}: {mean:g} s ± {jitter:g} s")

    def latency(self, a: str, b: str) -> tuple[float, float]:
        """The ``(mean, jitter)`` of the links between `a` and `b`."""
        return self._latency_of(_pair(a, b, "latency"))

    def _latency_of(self, nodes: frozenset[str] | None) -> tuple[float, float]:
        if nodes is None:
            return self._default_latency
        return self._latencies.get(nodes, self._default_latency)

    def set_loss(self, a: str | Iterable[str], b: str | Iterable[str], p: float) -> None:
        """Lose each transmission of a chunk between `a` and `b` with probability `p`.

        On a stream, loss is not a missing message: TCP sends a lost chunk again after a
        retransmission timeout (`RETRANSMIT_TIMEOUT`, doubling each time), and everything
        sent after it waits behind it. So moderate loss shows as delay and bunching. If one
        chunk is lost `MAX_RETRANSMITS` times in a row (likely when `p` is near 1), the
        sender gives up and the connection is reset at both ends (``ECONNRESET``), as a
        kernel does when its retransmissions run out; hakit then sees an I/O error and
        reconnects or reports the stop.

        Args:
            a: a node name, or an iterable of node names.
            b: a node name, or an iterable of node names.
            p: the loss probability per transmission, in [0, 1]; 0 removes the fault.
        """
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
            raise ValueError(f"a loss probability must be a number in [0, 1], not {p!r}")
        pairs = _pairs(a, b, "set_loss")
        for pair in pairs:
            if p:
                self._losses[pair] = float(p)
            else:
                self._losses.pop(pair, None)
        for link in self._links:
            if link.nodes in pairs:
                link.loss = float(p)
        self._note("loss", f"{_names(a)} | {_names(b)}: p={p:g}")

    def loss(self, a: str, b: str) -> float:
        """The loss probability of the links between `a` and `b`."""
        return self._losses.get(_pair(a, b, "loss"), 0.0)

    @property
    def partitions(self) -> list[tuple[str, str]]:
        """The partitioned node pairs, sorted."""
        return sorted(tuple(sorted(pair)) for pair in self._cuts)  # type: ignore[misc]

    @property
    def holds(self) -> list[tuple[str, str]]:
        """The held node pairs, sorted."""
        return sorted(tuple(sorted(pair)) for pair in self._holds)  # type: ignore[misc]

    def crash(self, name: str) -> None:
        """Kill node `name`'s process, as far as the network can tell.

        Its listener disappears (new connections are refused), and each of its connections
        ends as the kernel ends a dead process's sockets: the peer reads end of stream (FIN)
        after the data already sent, or a reset (RST) where the dead end had unread data.
        Bytes in flight towards the dead node are lost. Until `revive`, the name can
        neither listen nor connect (``ENETDOWN``). The runtime's `Cluster.crash` calls this
        and then stops the node's tasks.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"crash: a node name must be a non-empty string, not {name!r}")
        now = trio.current_time()
        self._advance(now)
        self._down.add(name)
        listener = self._listeners.pop(name, None)
        if listener is not None:
            listener._shut(crash=True)
        for link in list(self._links):
            for end in link.ends:
                if end.local_name == name:
                    end._close(crash=True)

    def revive(self, name: str) -> None:
        """Let a crashed node's name listen and connect again (its restart)."""
        self._down.discard(name)

    def is_down(self, name: str) -> bool:
        """Whether node `name` has crashed and was not revived."""
        return name in self._down

    def statistics(self) -> NetworkStatistics:
        """Return counts of open links and of delivered, held and dropped bytes."""
        try:
            now: float | None = trio.current_time()
        except RuntimeError:
            now = None  # outside the run: report the state as of the last settle
        held = 0
        for link in self._links:
            for pipe in (link.to_server, link.to_client):
                if now is not None and pipe.in_flight:
                    self._settle(pipe, now)
                if link.blocked:
                    held += sum(len(e[1]) for e in pipe.in_flight if isinstance(e[1], bytes))
        return NetworkStatistics(
            links_open=len(self._links),
            bytes_delivered=self._bytes_delivered,
            bytes_held=held,
            bytes_dropped=self._bytes_dropped,
            retransmissions=self._retransmissions,
            resets=self._resets,
        )

    def advance(self) -> None:
        """Report to the tracer every delivery due by now (the event log calls this)."""
        if self._due:
            self._advance(trio.current_time())

    # -- delivery ------------------------------------------------------------------------

    def _is_cut(self, nodes: frozenset[str] | None) -> bool:
        return nodes is not None and (nodes in self._cuts or nodes in self._holds)

    def _note(self, action: str, detail: str) -> None:
        if self.tracer is not None:
            now = trio.current_time()
            self._advance(now)
            self.tracer.fault(now, action, detail)

    def _change(self, apply: Callable[[], object], action: str, detail: str) -> None:
        now = trio.current_time()
        self._advance(now)
        links = list(self._links)
        # Deliver what was due under the old cuts before they change.
        for link in links:
            self._settle(link.to_server, now)
            self._settle(link.to_client, now)
        apply()
        if self.tracer is not None:
            self.tracer.fault(now, action, detail)
        for link in links:
            blocked = self._is_cut(link.nodes)
            if blocked == link.blocked:
                continue
            link.blocked = blocked
            if not blocked:
                link.unblocked_at = now
            for pipe in (link.to_server, link.to_client):
                if blocked:
                    self._trace_held(pipe, now, action)
                else:
                    self._settle(pipe, now)
                # A receiver's wake-up deadline depends on the cut state: recompute it.
                pipe.wake()

    def _split(self, pipe: _Pipe, data: bytes) -> tuple[bytes, ...]:
        """Cut the bytes written to a pipe into frames, for the tracer; count them.

        Returns:
            The payloads of the frames the bytes complete, numbered from the pipe's `seq`
            before the call on (`seq` is moved past them).
        """
        if pipe.unframed:
            pipe.seq += 1
            return (data,)
        if not pipe.partial:
            chunk, frames = self._split_memo
            if chunk is data:
                pipe.seq += len(frames)
                return frames
            end = len(data)
            if end >= 4:
                size = size_prefix(data)[0]
                if size + 4 == end and size <= _TRACE_MAX_FRAME:
                    # The usual write: exactly one frame.
                    pipe.seq += 1
                    frames = (data[4:],)
                    self._split_memo = (data, frames)
                    return frames
        whole = not pipe.partial
        buf = pipe.partial + data if pipe.partial else data
        cut: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            size = size_prefix(buf, pos)[0]
            if size > _TRACE_MAX_FRAME:
                pipe.unframed = True  # not hakit frames: trace raw chunks from now on
                cut.append(buf[pos:])
                pos = end
                break
            if end - pos - 4 < size:
                break
            cut.append(buf[pos + 4 : pos + 4 + size])
            pos += 4 + size
        pipe.partial = buf[pos:]
        pipe.seq += len(cut)
        frames = tuple(cut)
        if whole and pos == end and not pipe.unframed:
            self._split_memo = (data, frames)
        return frames

    def _marks(self, pipe: _Pipe, item: _Item) -> tuple[_Mark, ...]:
        """The tracer's numbered frames of a chunk, or the marker a signal or reset is."""
        if not isinstance(item, bytes):
            return self._marker(pipe)
        seq = pipe.seq
        return tuple(enumerate(self._split(pipe, item), seq))

    def _marker(self, pipe: _Pipe) -> tuple[_Mark, ...]:
        seq = pipe.seq
        pipe.seq += 1
        return ((seq, None),)

    def _transmit(self, pipe: _Pipe, item: _Item) -> None:
        link = pipe.link
        # The same clock as trio.current_time(), without its two layers of calls: it runs
        # for every frame. The link's own, since the network may outlive the run.
        now = link.now()
        tracer = self.tracer
        if tracer is not None and self._due:
            self._advance(now)
        if (
            type(item) is bytes
            and not pipe.in_flight
            and not link.blocked
            and not link.latency
            and not link.jitter
            and not link.loss
            and not pipe.reader_closed
            and pipe.reset is None
            and pipe.last_due <= now
        ):
            # The common case on a healthy link without latency: delivered at once. The same
            # steps and records as below, without the general path's tests and tuples.
            pipe.last_due = now
            size = len(item)
            pipe.buffer.append(item)
            pipe.buffered += size
            self._bytes_delivered += size
            if tracer is not None:
                seq = pipe.seq  # the first frame's number: `_split` moves it on
                tracer.passed(now, pipe.route, seq, self._split(pipe, item))
            watcher = pipe.watcher
            if watcher is None or pipe.waiter is not None:
                pipe.wake()
            else:
                watcher()  # what wake() does here, without its call: once per frame
            return
        marks = () if tracer is None else self._marks(pipe, item)
        if isinstance(item, bytes) and (pipe.reader_closed or pipe.reset is not None):
            # The reader is gone; the writer learns it when the close notice arrives.
            self._bytes_dropped += len(item)
            if tracer is not None:
                why = pipe.reset or "the receiving end was closed"
                self._trace_all(pipe, "sent", now, marks, item, now, None, 0, "")
                self._trace_all(pipe, "dropped", now, marks, item, now, None, 0, why)
            return
        due = now + link.latency
        if link.jitter:
            due += pipe.rng.uniform(-link.jitter, link.jitter)
        lost = 0
        if link.loss and isinstance(item, bytes):
            while lost < MAX_RETRANSMITS and pipe.rng.random() < link.loss:
                lost += 1
            self._retransmissions += lost
            due += RETRANSMIT_TIMEOUT * (2**lost - 1)
        if due < pipe.last_due:
            due = pipe.last_due
        if lost == MAX_RETRANSMITS:
            assert isinstance(item, bytes)
            self._give_up(pipe, now, item, marks, due)
            return
        pipe.last_due = due
        if tracer is not None:
            self._trace_all(pipe, "sent", now, marks, item, now, due, lost, "")
            if link.blocked:
                self._trace_all(pipe, "held", now, marks, item, now, None, 0, "the link is cut")
        if due <= now and not pipe.in_flight and not link.blocked:
            self._deliver(pipe, (due, item, marks, now), now)  # the common case: no latency, no cut
        else:
            self._enqueue(pipe, (due, item, marks, now))
        pipe.wake()

    def _enqueue(self, pipe: _Pipe, entry: _Entry) -> None:
        pipe.in_flight.append(entry)
        if self.tracer is not None:
            self._due_count += 1
            heapq.heappush(self._due, (entry[0], self._due_count, pipe))

    def _give_up(
        self, pipe: _Pipe, now: float, item: bytes, marks: tuple[_Mark, ...], due: float
    ) -> None:
        """The chunk was lost on every retransmission: reset the connection at `due`."""
        self._bytes_dropped += len(item)
        detail = f"{MAX_RETRANSMITS} retransmissions lost"
        if self.tracer is not None:
            self._trace_all(pipe, "sent", now, marks, item, now, None, MAX_RETRANSMITS, "")
        if pipe.link.resetting:  # the connection is already going down
            if self.tracer is not None:
                self._trace_all(pipe, "dropped", now, marks, item, now, None, 0, f"lost: {detail}")
            return
        pipe.link.resetting = True
        self._resets += 1
        for target, lost in ((pipe, marks), (pipe.reverse, ())):
            when = max(due, target.last_due)
            target.last_due = when
            reset_marks = self._marker(target) if self.tracer is not None else ()
            self._enqueue(target, (when, _Reset(detail, lost, now), reset_marks, now))
            target.wake()

    def _advance(self, now: float) -> None:
        due = self._due
        while due and due[0][0] <= now:
            when, _, pipe = heapq.heappop(due)
            self._settle(pipe, when)

    def _settle(self, pipe: _Pipe, now: float) -> None:
        if pipe.link.blocked:
            return
        if self._due and self._due[0][0] < now and self.tracer is not None:
            self._advance(now)  # report earlier deliveries on other pipes first
        in_flight = pipe.in_flight
        while in_flight and in_flight[0][0] <= now:
            entry = in_flight.popleft()
            self._deliver(pipe, entry, max(entry[0], pipe.link.unblocked_at))

    def _deliver(self, pipe: _Pipe, entry: _Entry, when: float) -> None:
        _, item, marks, sent = entry
        tracer = self.tracer
        if isinstance(item, bytes):
            if pipe.reader_closed or pipe.reset is not None:
                self._dropped(pipe, entry, pipe.reset or "the receiving end was closed", when)
                return
            pipe.buffer.append(item)
            pipe.buffered += len(item)
            self._bytes_delivered += len(item)
        elif isinstance(item, _Reset):
            if tracer is not None:
                self._trace_all(pipe, "dropped", when, item.lost, b"", item.sent, None,
                                MAX_RETRANSMITS, f"lost: {item.detail}")  # fmt: skip
            if pipe.reset is None:
                pipe.reset = item.detail
                self._drop_buffer(pipe)
                pipe.eof = True
                pipe.reverse.broken = True
                for rest in pipe.in_flight:
                    self._dropped(pipe, rest, f"connection reset: {item.detail}", when)
                pipe.in_flight.clear()
        elif item is _Signal.EOF:
            pipe.eof = True
        else:
            pipe.eof = True
            pipe.reverse.broken = True
        if tracer is not None:
            if pipe.reader_closed and not isinstance(item, bytes):
                why = "the receiving end was closed"  # a marker reaching a closed or dead end
                self._trace_all(pipe, "dropped", when, marks, item, sent, None, 0, why)
            else:
                self._trace_all(pipe, "delivered", when, marks, item, sent, None, 0, "")

    def _drop_buffer(self, pipe: _Pipe) -> None:
        # Bytes that reached the reader's buffer but will never be read.
        self._bytes_dropped += pipe.buffered
        pipe.buffer.clear()
        pipe.buffered = 0

    def _dropped(self, pipe: _Pipe, entry: _Entry, why: str, when: float | None = None) -> None:
        _, item, marks, sent = entry
        if isinstance(item, bytes):
            self._bytes_dropped += len(item)
        if self.tracer is not None:
            when = trio.current_time() if when is None else when
            self._trace_all(pipe, "dropped", when, marks, item, sent, None, 0, why)

    def _trace_held(self, pipe: _Pipe, now: float, why: str) -> None:
        if self.tracer is None:
            return
        for _, item, marks, sent in pipe.in_flight:
            self._trace_all(
                pipe, "held", now, marks, item, sent, None, 0, f"the link is cut ({why})"
            )

    def _trace_all(
        self, pipe: _Pipe, action: str, when: float, marks: tuple[_Mark, ...], item: _Item,
        sent: float, due: float | None, retransmits: int, detail: str,
    ) -> None:  # fmt: skip
        tracer = self.tracer
        assert tracer is not None
        for seq, frame in marks:
            if frame is not None:
                signal = ""
            elif isinstance(item, _Reset):
                signal = "RESET"
            else:
                assert isinstance(item, _Signal)
                signal = item.value
            tracer.message(action, when, pipe.route, seq, frame, signal, sent, due, retransmits,
                           detail)  # fmt: skip
