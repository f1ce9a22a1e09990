"""The event log: every connect, sync, role change and stop, as small frozen records.

A node appends to its own log and forwards each event to its cluster's log, if it has one, so
a notebook can replay a whole cluster's timeline in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..protocol import StopReason


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
    """The node's role changed."""

    old: str
    new: str
    generation: int

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


EventSink = Callable[[Event], None]


class EventLog:
    """An append-only list of events with an optional listener (the cluster's log)."""

    def __init__(self, forward: EventSink | None = None) -> None:
        self._events: list[Event] = []
        self._forward = forward

    def append(self, event: Event) -> None:
        """Record an event (and forward it)."""
        self._events.append(event)
        if self._forward is not None:
            self._forward(event)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def __getitem__(self, index: int) -> Event:
        return self._events[index]

    def of_type(self, kind: type[Event]) -> list[Event]:
        """Return the recorded events of one class, in order."""
        return [event for event in self._events if isinstance(event, kind)]
