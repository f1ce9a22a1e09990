"""The event log: every connect, sync, role change, stop and message, as small frozen records.

A node appends to its own log and forwards each event to its cluster's log, if it has one; the
cluster's simulated network adds a `MessageEvent` for every frame sent, held, delivered or
dropped, so a notebook can draw and replay a whole cluster's timeline in order.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from ..protocol import StopReason
from ._decode import frame_fields
from ._eventio import dump_event, load_event


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened on a node.

    Attributes:
        time: the trio clock when it happened.
        node: the node it happened on.
    """

    time: float
    node: str

    def describe(self) -> str:
        """Return a one-line, plain-words account of the event."""
        return type(self).__name__


@dataclass(frozen=True, slots=True)
class RoleChanged(Event):
    """The node's role changed; `history` is its history id then (see `Node.history_id`).

    Two nodes promoted by hand while cut off can become masters of one generation, never of
    one history.
    """

    old: str
    new: str
    generation: int
    history: str = ""

    def describe(self) -> str:
        return f"role {self.old} -> {self.new} (generation {self.generation})"


@dataclass(frozen=True, slots=True)
class Connected(Event):
    """A replication link was established (seen from either side)."""

    peer: str
    address: str | None

    def describe(self) -> str:
        return f"connected to {self.peer}" + (f" at {self.address}" if self.address else "")


@dataclass(frozen=True, slots=True)
class ReplicaSynced(Event):
    """A replica finished its initial sync (seen from either side)."""

    replica: str
    sync: str
    txid: int

    def describe(self) -> str:
        return f"replica {self.replica} synced ({self.sync}) at txid {self.txid}"


@dataclass(frozen=True, slots=True)
class ReplicaStopped(Event):
    """The replica's attach session stopped."""

    reason: StopReason
    detail: str
    master: str | None

    def describe(self) -> str:
        return f"replica stopped: {self.reason.name} - {self.reason.describe()} ({self.detail})"


@dataclass(frozen=True, slots=True)
class ReplicaDetached(Event):
    """The master dropped one replica's link."""

    replica: str
    reason: StopReason
    detail: str

    def describe(self) -> str:
        return f"replica {self.replica} detached: {self.reason.name} ({self.detail})"


@dataclass(frozen=True, slots=True)
class MasterChanged(Event):
    """A replica learned that a new master took over and follows it."""

    old_master: str | None
    new_master: str
    address: str | None
    generation: int

    def describe(self) -> str:
        return (
            f"master changed {self.old_master} -> {self.new_master} at {self.address} "
            f"(generation {self.generation})"
        )


@dataclass(frozen=True, slots=True)
class HistoryDiverged(Event):
    """This replica's transactions `first_txid`..`last_txid` are not on its master's history.

    Two nodes wrote those txids independently (for example both were promoted by hand while
    cut off from each other). The replica takes a full sync, which discards them; what it
    discarded stays readable with `Node.discarded()` (and, on a `SqliteStorage`, in its file).
    """

    master: str
    first_txid: int
    last_txid: int

    def describe(self) -> str:
        return (
            f"history diverged from master {self.master}: discarding txids "
            f"{self.first_txid}..{self.last_txid} (kept in node.discarded())"
        )


@dataclass(frozen=True, slots=True)
class ConnectionRefused(Event):
    """An incoming connection was refused or dropped for bad input."""

    peer: str
    detail: str

    def describe(self) -> str:
        return f"refused {self.peer}: {self.detail}"


@dataclass(frozen=True, slots=True)
class CommitFailed(Event):
    """A commit did not complete."""

    txid: int | None
    detail: str

    def describe(self) -> str:
        return f"commit {self.txid} failed: {self.detail}"


@dataclass(frozen=True, slots=True)
class ChannelConnected(Event):
    """A message channel connection was opened (to a peer, or by a peer to this node)."""

    peer: str
    address: str | None
    incoming: bool

    def describe(self) -> str:
        if self.incoming:
            return f"channel connection from {self.peer}"
        return f"channel connection to {self.peer}" + (
            f" at {self.address}" if self.address else ""
        )


@dataclass(frozen=True, slots=True)
class ChannelDisconnected(Event):
    """A message channel connection ended; `failed_requests` waiting requests failed with it."""

    peer: str
    address: str | None
    incoming: bool
    detail: str
    failed_requests: int

    def describe(self) -> str:
        way = "from" if self.incoming else "to"
        failed = f"; {self.failed_requests} request(s) failed" if self.failed_requests else ""
        return f"channel connection {way} {self.peer} closed: {self.detail}{failed}"


@dataclass(frozen=True, slots=True)
class ChannelUnavailable(Event):
    """A channel message could not be sent: no master known, or the peer unreachable."""

    target: str
    detail: str

    def describe(self) -> str:
        return f"channel to {self.target} unavailable: {self.detail}"


@dataclass(frozen=True, slots=True)
class ChannelRequestTimedOut(Event):
    """A channel request got no answer in time (an answer arriving later is dropped)."""

    target: str
    timeout: float

    def describe(self) -> str:
        return f"channel request to {self.target} timed out after {self.timeout:g} s"


@dataclass(frozen=True, slots=True)
class ChannelHandlerFailed(Event):
    """The message handler raised, or returned without answering a request."""

    sender: str
    detail: str

    def describe(self) -> str:
        return f"message handler failed on a message from {self.sender}: {self.detail}"


@dataclass(frozen=True, slots=True)
class MessageEvent(Event):
    """One frame on a ``mem:`` link of a cluster: sent, held, delivered or dropped.

    `node` is where it happened: the sender for ``"sent"`` and ``"held"``, the receiver for
    ``"delivered"`` and ``"dropped"`` (``"?"`` for an anonymous client). The records of one
    frame share `link`, `outbound` and `seq`, so `id` joins them into one arrow.

    Attributes:
        action: ``"sent"``, ``"held"`` (waiting behind a partition or hold),
            ``"delivered"`` (reached the receiver's buffer) or ``"dropped"`` (will never be
            read: the receiver closed or crashed, or the connection was reset).
        sender: the sending node (None for an anonymous client).
        receiver: the receiving node (None for an anonymous client).
        link: the connection, ``"<client>><server>#<n>"``.
        outbound: True from the connecting end to the listening end.
        seq: the frame's number on its direction of the link (-1: the connection opening).
        kind: the message kind (``"HELLO"``, ``"TXNS"``...), a stream marker (``"CONNECT"``,
            ``"EOF"``, ``"CLOSE"``, ``"RESET"``), or ``"?"`` for bytes that are no message.
        size: bytes on the wire (the frame with its length prefix; 0 for markers).
        sent: when the frame was sent.
        due: on ``"sent"``: when it is to arrive (None if it will not).
        retransmits: on ``"sent"``: how many transmissions `set_loss` lost first.
        detail: why it was held or dropped.
        frame: the frame's msgpack payload (empty for markers).
    """

    action: str
    sender: str | None
    receiver: str | None
    link: str
    outbound: bool
    seq: int
    kind: str
    size: int
    sent: float
    due: float | None = None
    retransmits: int = 0
    detail: str = ""
    frame: bytes = field(default=b"", repr=False)

    @property
    def id(self) -> str:
        """The frame's identity, shared by its sent, held, delivered and dropped records."""
        return f"{self.link}{'>' if self.outbound else '<'}{self.seq}"

    @property
    def fields(self) -> dict[str, Any]:
        """The decoded message fields, in a JSON-friendly form (long values shortened)."""
        return frame_fields(self.frame) if self.frame else {}

    def describe(self) -> str:
        who = f"{self.sender or '?'} -> {self.receiver or '?'}"
        text = f"{self.kind} {who} {self.action}"
        if self.size:
            text += f" ({self.size} B)"
        if self.retransmits:
            text += f" after {self.retransmits} lost transmission(s)"
        return text + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True, slots=True)
class NetworkChanged(Event):
    """A fault was set or lifted on the simulated network (`node` is ``"network"``).

    Attributes:
        action: ``"partition"``, ``"heal"``, ``"hold"``, ``"release"``, ``"latency"`` or
            ``"loss"``.
        detail: the nodes concerned and the values set.
    """

    action: str
    detail: str

    def describe(self) -> str:
        return self.action + (f" {self.detail}" if self.detail else "")


@dataclass(frozen=True, slots=True)
class NodeCrashed(Event):
    """The node's process died (`Cluster.crash`): no goodbyes, its connections reset.

    Attributes:
        role: its role when it died.
        txid: its last transaction id then.
    """

    role: str
    txid: int

    def describe(self) -> str:
        return f"crashed (was {self.role} at txid {self.txid})"


@dataclass(frozen=True, slots=True)
class NodeRestarted(Event):
    """The node came back after a crash, on its storage (`Cluster.restart`).

    Attributes:
        storage: ``"kept"`` (a durable storage reopened) or ``"empty"`` (a memory storage,
            lost with the process).
        txid: its last transaction id after the restart.
        generation: its generation after the restart.
    """

    storage: str
    txid: int
    generation: int

    def describe(self) -> str:
        return f"restarted, storage {self.storage} (txid {self.txid}, generation {self.generation})"


EventSink = Callable[[Event], None]
_E = TypeVar("_E", bound=Event)


def _classes() -> dict[str, type[Event]]:
    found: dict[str, type[Event]] = {}
    todo: list[type[Event]] = [Event]
    while todo:
        cls = todo.pop()
        # @dataclass(slots=True) makes a new class; the slotless original lingers among
        # the subclasses until collected: skip it.
        if "__slots__" in cls.__dict__:
            found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


#: The number of events a log keeps by default; older ones are dropped (and counted).
DEFAULT_CAPACITY = 100_000

# Within one instant: deliveries of frames sent earlier (they cause what follows), then node
# and network events, then sends (with deliveries of frames sent in that same instant).
_ACTION_ORDER = {"sent": 0, "held": 1, "delivered": 2, "dropped": 3}


#: A `MessageEvent` as the cluster's tracer records it: a plain tuple of its fields, in
#: field order. The log keeps these and builds the `MessageEvent` when it is read: a tuple of
#: strings and numbers costs a fraction of a frozen dataclass to make, and the garbage
#: collector stops tracking it, so a full ring of them adds nothing to collection pauses.
MessageRecord = tuple[
    float, str, str, "str | None", "str | None", str, bool, int, str, int, float,
    "float | None", int, str, bytes,
]  # fmt: skip
_Item = Any  # an Event, or a MessageRecord


def _order(event: _Item) -> tuple[Any, ...]:
    if type(event) is tuple:
        action = event[2]
        late = action in ("delivered", "dropped") and event[10] < event[0]
        return (event[0], 0 if late else 2, event[5], not event[6], event[7],
                _ACTION_ORDER.get(action, 9))  # fmt: skip
    if isinstance(event, MessageEvent):
        late = event.action in ("delivered", "dropped") and event.sent < event.time
        return (event.time, 0 if late else 2, event.link, not event.outbound, event.seq,
                _ACTION_ORDER.get(event.action, 9))  # fmt: skip
    # A stable sort keeps each node's own events in their order.
    return (event.time, 1, event.node)


def _event(item: _Item) -> Event:
    """The `Event` an item of the ring stands for (a record becomes its `MessageEvent`)."""
    return MessageEvent(*item) if type(item) is tuple else item


class EventLog:
    """The ordered, bounded log of a node's or a cluster's events.

    A `canonical` log (the cluster's) keeps events in time order, and those of one instant
    in a canonical order (deliveries of earlier frames, then node and network events by
    node, then sends, by link and sequence number) rather than in the order trio happened
    to run the tasks, so the same seed and script give the same log.

    It keeps the newest `capacity` events (a ring: `dropped` counts those it forgot); a
    `sink` is handed every event, in the same order, and can keep everything (write it to
    a file, say).

    Args:
        forward: called with each event as it is appended (a node forwards to its cluster).
        capacity: how many events to keep; None keeps all.
        sink: called with each event once its place in the order is final.
        meta: a JSON-friendly description saved with the log (the cluster's seed...).
        canonical: order the events of each instant as described above; otherwise they
            are kept in the order they were appended.
    """

    def __init__(
        self,
        forward: EventSink | None = None,
        *,
        capacity: int | None = DEFAULT_CAPACITY,
        sink: EventSink | None = None,
        meta: dict[str, Any] | None = None,
        canonical: bool = False,
    ) -> None:
        if capacity is not None and (not isinstance(capacity, int) or capacity < 1):
            raise ValueError(f"capacity must be a positive int or None, not {capacity!r}")
        self._ring: deque[_Item] = deque(maxlen=capacity)
        self._pending: list[_Item] = []  # the events of the latest instant, not yet ordered
        self._pending_time = float("-inf")
        self._in_order = True  # the pending events are known to be in canonical order
        self._forward = forward
        self.sink = sink
        self.capacity = capacity
        self.dropped = 0
        self.meta: dict[str, Any] = dict(meta or {})
        self._refresh: Callable[[], None] | None = None  # reports deliveries due (cluster)
        self._canonical = canonical

    def append(self, event: Event) -> None:
        """Record an event (and forward it)."""
        if not self._canonical:
            self._keep(event)
        elif event.time > self._pending_time:
            if self._pending:
                self._flush()
            self._pending_time = event.time
            self._pending.append(event)
            self._in_order = True
        else:
            self._pending.append(event)
            self._in_order = False
        if self._forward is not None:
            self._forward(event)

    def append_message(self, record: MessageRecord) -> None:
        """Record a `MessageEvent` given as the tuple of its fields (the tracer's hot path)."""
        if self._forward is not None or not self._canonical:
            self.append(MessageEvent(*record))
            return
        time = record[0]
        pending = self._pending
        if time > self._pending_time:
            if pending:
                self._flush()
                pending = self._pending
            self._pending_time = time
            self._in_order = True
        elif self._in_order and pending:
            # The usual instant: a frame sent and delivered at once, which is its canonical
            # order already; anything else in the same instant is sorted when it is flushed.
            last = pending[-1]
            if not (
                record[2] == "delivered"
                and type(last) is tuple
                and last[2] == "sent"
                and last[7] == record[7]
                and last[5] == record[5]
                and last[6] == record[6]
            ):
                self._in_order = False
        pending.append(record)

    def append_passed(self, sent: MessageRecord, delivered: MessageRecord) -> None:
        """Record a frame sent and delivered in the same instant (two records, in order).

        The tracer's hottest path: most frames of a healthy simulated link do just that.
        """
        if self._forward is not None or not self._canonical:
            self.append(MessageEvent(*sent))
            self.append(MessageEvent(*delivered))
            return
        time = sent[0]
        pending = self._pending
        if time > self._pending_time:
            if pending:
                self._flush()
                pending = self._pending
            self._pending_time = time
            self._in_order = True
        elif pending:
            self._in_order = False  # behind others of its instant: sorted when flushed
        pending.append(sent)
        pending.append(delivered)

    def _flush(self) -> None:
        pending = self._pending
        if not self._in_order:
            pending.sort(key=_order)
        if self.sink is None:
            ring = self._ring
            if ring.maxlen is not None:
                over = len(ring) + len(pending) - ring.maxlen
                if over > 0:
                    self.dropped += over
            ring.extend(pending)
            # Emptied, not replaced: a new list per instant is garbage on the hottest path.
            pending.clear()
        else:
            self._pending = []  # a sink may append to this log again
            for event in pending:
                self._keep(event)

    def _keep(self, event: _Item) -> None:
        ring = self._ring
        if len(ring) == ring.maxlen:
            self.dropped += 1
        ring.append(event)
        if self.sink is not None:
            self.sink(_event(event))

    def flush(self) -> None:
        """Hand the latest instant's events to the sink now (at the end of a run)."""
        self._sync()
        if self._pending:
            self._flush()
            self._pending_time = float("-inf")

    @property
    def total(self) -> int:
        """How many events the log has recorded since it began (kept or dropped)."""
        return self.dropped + len(self)

    def read(self, start: int) -> tuple[list[Event], int]:
        """Return the events from number `start` on (0 is the first ever), and the next number.

        For a reader that follows the log (a dashboard): ``events, cursor =
        log.read(cursor)``. Events the ring has already dropped are skipped. Reading fixes
        the order of the current instant's events so far (a later one of the same instant
        comes after them).
        """
        self._sync()
        if self._pending:
            self._flush()
        first = max(start - self.dropped, 0)
        ring = self._ring
        if first >= len(ring):
            return [], self.dropped + len(ring)
        # From whichever end is nearer: a reader that follows the log reads the newest few.
        if first > len(ring) // 2:
            items = [ring[i] for i in range(first - len(ring), 0)]
        else:
            items = list(itertools.islice(ring, first, None))
        return [_event(item) for item in items], self.dropped + len(ring)

    def _sync(self) -> None:
        if self._refresh is not None:
            self._refresh()

    def _events(self) -> list[Event]:
        self._sync()
        pending = sorted(self._pending, key=_order)
        return [_event(item) for item in itertools.chain(self._ring, pending)]

    def __iter__(self) -> Iterator[Event]:
        return iter(self._events())

    def __len__(self) -> int:
        self._sync()
        return len(self._ring) + len(self._pending)

    @overload
    def __getitem__(self, index: int) -> Event: ...
    @overload
    def __getitem__(self, index: slice) -> list[Event]: ...
    def __getitem__(self, index: int | slice) -> Event | list[Event]:
        if isinstance(index, slice):
            return self._events()[index]
        self._sync()
        ring = self._ring
        total = len(ring) + len(self._pending)
        position = index + total if index < 0 else index
        if not 0 <= position < total:
            raise IndexError("event log index out of range")
        if position < len(ring):
            return _event(ring[position])
        return _event(sorted(self._pending, key=_order)[position - len(ring)])

    def __repr__(self) -> str:
        return f"<hakit.EventLog {len(self)} events, {self.dropped} dropped>"

    def of_type(self, kind: type[_E]) -> list[_E]:
        """Return the recorded events of one class, in order."""
        self._sync()
        items = itertools.chain(self._ring, sorted(self._pending, key=_order))
        if not issubclass(MessageEvent, kind):  # records are all MessageEvents: skip them
            return [e for e in items if type(e) is not tuple and isinstance(e, kind)]
        return [e for e in map(_event, items) if isinstance(e, kind)]

    def since(self, time: float) -> list[Event]:
        """Return the events at or after `time`, in order."""
        events = self._events()
        start = bisect.bisect_left(events, time, key=lambda e: e.time)
        return events[start:]

    def dumps(self) -> str:
        """Serialize the log: a header line, then one JSON line per event (see `save`)."""
        header = {"format": "hakit-events", "version": 1, "dropped": self.dropped, **self.meta}
        lines = [json.dumps(header, sort_keys=True, separators=(",", ":"))]
        lines.extend(dump_event(event) for event in self._events())
        return "\n".join(lines) + "\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the log to `path` as JSON lines; `EventLog.load` reads it back.

        The same run saves the same bytes: events are in their canonical order, keys are
        sorted, and frames are kept whole (base64) beside their decoded fields.
        """
        with open(path, "w", encoding="utf-8") as file:
            file.write(self.dumps())

    @classmethod
    def loads(cls, text: str) -> EventLog:
        """Read a log serialized by `dumps`.

        Raises:
            ValueError: the text is not a hakit event log.
        """
        lines = text.splitlines()
        try:
            header = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a hakit event log: {exc}") from None
        if not isinstance(header, dict) or header.get("format") != "hakit-events":
            raise ValueError("not a hakit event log (no hakit-events header line)")
        if header.get("version") != 1:
            raise ValueError(f"unsupported hakit event log version {header.get('version')!r}")
        meta = {k: v for k, v in header.items() if k not in ("format", "version", "dropped")}
        log = cls(capacity=None, meta=meta)
        log.dropped = int(header.get("dropped", 0))
        for number, line in enumerate(lines[1:], start=2):
            if line.strip():
                try:
                    log._ring.append(load_event(line, _classes()))
                except (ValueError, KeyError, TypeError) as exc:
                    raise ValueError(f"line {number}: not a hakit event: {exc}") from None
        return log

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EventLog:
        """Read a log written by `save`.

        Raises:
            OSError: the file cannot be read.
            ValueError: it is not a hakit event log.
        """
        with open(path, encoding="utf-8") as file:
            return cls.loads(file.read())
