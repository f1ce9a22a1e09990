"""The simulated network of one cluster: in-kernel byte streams with partitions and latency.

Every ``mem:`` connection is a pair of one-way pipes. A chunk written to a pipe goes into its
*in-flight* queue with a due time (now + latency + seeded jitter, never earlier than the chunk
before it, so a link never reorders) and moves to the receiver's buffer once it is due and the
link is not cut. A cut (`SimulatedNetwork.partition`, `SimulatedNetwork.hold`) behaves like a
pulled cable, not a reset: chunks stay in flight, neither delivered nor lost, and the end of
the stream (a close) waits behind them, so neither side can tell a cut from a silent peer.

Delivery is computed lazily, without background tasks: a pipe is *settled* (due chunks
moved) whenever someone looks at it, and every pipe is settled just before the cut state
changes. Between two changes a pipe's cut state is constant, so lazy delivery gives exactly
the times an eager one would, and the network needs no nursery. Time is trio's clock, so
everything is deterministic under `trio.testing.MockClock`.
"""

from __future__ import annotations

import enum
import errno
import math
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio


class _Signal(enum.Enum):
    # In-band markers travelling behind the data, so a cut holds them too.
    EOF = "eof"  # the writer called send_eof(): the reader sees end of stream
    CLOSE = "close"  # the writer closed its end: end of stream, and the reader's sends break


_Item = bytes | _Signal


@dataclass(frozen=True, slots=True)
class NetworkStatistics:
    """A snapshot of a `SimulatedNetwork`.

    Attributes:
        links_open: connections with at least one end still open.
        bytes_delivered: bytes that reached the receiving end's buffer, since the network
            was created.
        bytes_held: bytes sent across a cut (partition or hold) and waiting for it to heal.
    """

    links_open: int
    bytes_delivered: int
    bytes_held: int


class _Pipe:
    """One direction of a link: the writer's in-flight chunks and the reader's buffer."""

    __slots__ = (
        "broken",
        "buffer",
        "buffered",
        "eof",
        "in_flight",
        "last_due",
        "link",
        "reader_closed",
        "reverse",
        "rng",
        "waiter",
    )

    def __init__(self, link: _Link, rng: random.Random) -> None:
        self.link = link
        self.rng = rng
        self.reverse: _Pipe = self  # set by _Link once both pipes exist
        self.in_flight: deque[tuple[float, _Item]] = deque()
        self.buffer: deque[bytes] = deque()
        self.buffered = 0
        self.last_due = -math.inf
        self.eof = False  # end of stream reached the reader
        self.broken = False  # the reader's close notice reached the writer
        self.reader_closed = False
        self.waiter: trio.Event | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter.set()


class _Link:
    """One connection: its two pipes, the node names at its ends, and whether it is cut."""

    __slots__ = ("blocked", "nodes", "open_ends", "to_client", "to_server")

    def __init__(self, nodes: frozenset[str] | None, seed: str, blocked: bool) -> None:
        self.nodes = nodes
        self.blocked = blocked
        self.open_ends = 2
        # One generator per direction, seeded from the link's identity rather than drawn
        # from a shared one: jitter on a link then does not depend on how the scheduler
        # interleaved traffic on other links.
        self.to_server = _Pipe(self, random.Random(f"{seed}>"))
        self.to_client = _Pipe(self, random.Random(f"{seed}<"))
        self.to_server.reverse = self.to_client
        self.to_client.reverse = self.to_server


class MemoryStream(trio.abc.HalfCloseableStream):
    """One end of a ``mem:`` connection (returned by `SimulatedNetwork.connect` and accept).

    Attributes:
        local_name: the node name at this end (None for an anonymous client).
        remote_name: the node name at the other end (None for an anonymous client).
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
            trio.BrokenResourceError: the peer closed its end (once its close arrived here).
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
            trio.BusyResourceError: another task is receiving on this stream.
            trio.ClosedResourceError: this end was closed, before or during the call.
        """
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint()
            pipe = self._in
            network = self._network
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("the stream is closed")
                if pipe.in_flight:
                    network._settle(pipe, trio.current_time())
                if pipe.buffered:
                    return _take(pipe, max_bytes)
                if pipe.eof:
                    return b""
                if pipe.in_flight and not pipe.link.blocked:
                    deadline = pipe.in_flight[0][0]
                else:
                    deadline = math.inf  # only a send, close, heal or release can help
                event = pipe.waiter = trio.Event()
                with trio.move_on_at(deadline):
                    await event.wait()
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """Close this end; the peer reads end of stream once the close reaches it."""
        self._close()
        await trio.lowlevel.checkpoint()

    def _check_can_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the stream is closed")
        if self._eof_sent:
            raise trio.ClosedResourceError("cannot send after send_eof()")
        if self._in.in_flight:
            # The peer's close notice travels on the incoming pipe: settle it to learn.
            self._network._settle(self._in, trio.current_time())
        if self._out.broken:
            raise trio.BrokenResourceError("the peer closed the connection")

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        network = self._network
        network._transmit(self._out, _Signal.CLOSE)
        incoming = self._in
        incoming.reader_closed = True
        incoming.buffer.clear()
        incoming.buffered = 0
        # Data still in flight towards us can never be read: drop it now, so it is not
        # reported as held; the markers stay, they still tell us the peer's state.
        incoming.in_flight = deque(
            entry for entry in incoming.in_flight if isinstance(entry[1], _Signal)
        )
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
        if not self._closed:
            self._closed = True
            if self._network._listeners.get(self.name) is self:
                del self._network._listeners[self.name]
            self._wake()
            while self._queue:
                self._queue.popleft()._close()
        await trio.lowlevel.checkpoint()

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


class SimulatedNetwork:
    """The in-kernel network of a cluster: named listeners, links, cuts and latency.

    Deterministic: jitter comes from generators seeded by `seed`, and all times come from
    trio's clock. Every method must be called from inside the trio run that uses the network.

    Args:
        seed: the seed of the latency jitter.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._listeners: dict[str, MemoryListener] = {}
        # Insertion-ordered (a dict used as a set) so that wake-ups happen in a
        # reproducible order.
        self._links: dict[_Link, None] = {}
        self._cuts: set[frozenset[str]] = set()
        self._holds: set[frozenset[str]] = set()
        self._latency = 0.0
        self._jitter = 0.0
        self._connections: dict[tuple[str | None, str], int] = {}
        self._bytes_delivered = 0

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
            OSError: the name is already taken (errno ``EADDRINUSE``).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a listener name must be a non-empty string, not {name!r}")
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
                subject to partitions and holds. Without one the link is never cut.

        Setting up a connection is instant (latency delays bytes, not the handshake), and
        the connection is queued for the listener like a socket's backlog: this returns
        before the listener accepts it.

        Returns:
            This side's stream; the other side is returned by the listener's ``accept()``.

        Raises:
            ConnectionRefusedError: nothing listens on `name`.
            OSError: `source` and `name` are partitioned (or held) apart.
        """
        await trio.lowlevel.checkpoint()
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
        link = _Link(nodes, f"{self.seed}/{source!r}/{name!r}/{index}", blocked=False)
        self._links[link] = None
        client = MemoryStream(self, link.to_client, link.to_server, source, name)
        server = MemoryStream(self, link.to_server, link.to_client, name, source)
        listener._enqueue(server)
        return client

    # -- faults ------------------------------------------------------------------------

    def partition(self, a: str | Iterable[str], b: str | Iterable[str]) -> None:
        """Cut every link between a node of `a` and a node of `b`, in both directions.

        Bytes sent across the cut are held, neither delivered nor lost, until `heal`; new
        connections across it fail with `OSError`.

        Args:
            a: a node name, or an iterable of node names.
            b: a node name, or an iterable of node names.
        """
        group_a = _group(a, "partition")
        group_b = _group(b, "partition")
        pairs = {frozenset((x, y)) for x in group_a for y in group_b if x != y}
        self._change(lambda: self._cuts.update(pairs))

    def heal(self) -> None:
        """Remove every partition; held bytes are delivered, in order. Holds stay."""
        self._change(self._cuts.clear)

    def hold(self, a: str, b: str) -> None:
        """Cut the link between nodes `a` and `b` like `partition`, independently of it.

        Only `release` (not `heal`) lifts a hold.
        """
        pair = _pair(a, b, "hold")
        self._change(lambda: self._holds.add(pair))

    def release(self, a: str, b: str) -> None:
        """Lift the hold between `a` and `b`; held bytes are delivered unless still cut."""
        pair = _pair(a, b, "release")
        self._change(lambda: self._holds.discard(pair))

    def set_latency(self, seconds: float, jitter: float = 0.0) -> None:
        """Delay every chunk sent from now on by `seconds` plus a seeded draw in [0, `jitter`].

        A chunk is never delivered before one sent earlier on the same link.
        """
        for label, value in (("seconds", seconds), ("jitter", jitter)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"latency {label} must be a finite number >= 0, not {value!r}")
        self._latency = float(seconds)
        self._jitter = float(jitter)

    @property
    def latency(self) -> tuple[float, float]:
        """The current ``(seconds, jitter)``."""
        return (self._latency, self._jitter)

    def statistics(self) -> NetworkStatistics:
        """Return counts of open links, delivered bytes and bytes held by cuts."""
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
                    held += sum(len(item) for _, item in pipe.in_flight if isinstance(item, bytes))
        return NetworkStatistics(
            links_open=len(self._links),
            bytes_delivered=self._bytes_delivered,
            bytes_held=held,
        )

    # -- delivery ------------------------------------------------------------------------

    def _is_cut(self, nodes: frozenset[str] | None) -> bool:
        return nodes is not None and (nodes in self._cuts or nodes in self._holds)

    def _change(self, apply: Callable[[], object]) -> None:
        now = trio.current_time()
        links = list(self._links)
        # Deliver what was due under the old cuts before they change.
        for link in links:
            self._settle(link.to_server, now)
            self._settle(link.to_client, now)
        apply()
        for link in links:
            blocked = self._is_cut(link.nodes)
            if blocked == link.blocked:
                continue
            link.blocked = blocked
            for pipe in (link.to_server, link.to_client):
                if not blocked:
                    self._settle(pipe, now)
                # A receiver's wake-up deadline depends on the cut state: recompute it.
                pipe.wake()

    def _transmit(self, pipe: _Pipe, item: _Item) -> None:
        if isinstance(item, bytes) and pipe.reader_closed:
            return  # the reader is gone; the writer learns it when the close notice arrives
        now = trio.current_time()
        due = now + self._latency
        if self._jitter:
            due += pipe.rng.uniform(0.0, self._jitter)
        if due < pipe.last_due:
            due = pipe.last_due
        pipe.last_due = due
        if due <= now and not pipe.in_flight and not pipe.link.blocked:
            self._deliver(pipe, item)  # the common case: no latency, no cut
        else:
            pipe.in_flight.append((due, item))
        pipe.wake()

    def _settle(self, pipe: _Pipe, now: float) -> None:
        if pipe.link.blocked:
            return
        in_flight = pipe.in_flight
        while in_flight and in_flight[0][0] <= now:
            self._deliver(pipe, in_flight.popleft()[1])

    def _deliver(self, pipe: _Pipe, item: _Item) -> None:
        if isinstance(item, bytes):
            if not pipe.reader_closed:
                pipe.buffer.append(item)
                pipe.buffered += len(item)
                self._bytes_delivered += len(item)
        elif item is _Signal.EOF:
            pipe.eof = True
        else:
            pipe.eof = True
            pipe.reverse.broken = True
