r"""The master side of one replica link, as a sans-I/O state machine.

Theory of operation: `decide_handshake` is a pure function of the replica's `Hello` and a
`MasterView` (what the master holds and allows); it returns the answer and the sync plan.
Afterwards `MasterLinkMachine.receive(message, now)` turns each message from the replica into
one event (`receive_value` does the same for a decoded frame, with a fast path for the usual
`Ack`), and `tick(now)` produces keep-alives and detects a silent replica. Acknowledgements
are cumulative: one `Ack(txid)` confirms every transaction up to `txid`.

States::

    SYNCING --Ack >= target--> STREAMING --PromoteRequest--> PROMOTING --KillMaster--> KILLED
       \___________________ Bye / error / silence ___________________> CLOSED
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _history as h
from . import _messages as m
from ._errors import LocalProtocolError, RemoteProtocolError
from ._stop import StopReason

_ACK = int(m.Kind.ACK)


@dataclass(frozen=True, slots=True)
class MasterView:
    """What the master holds and allows, as the handshake needs to see it."""

    cluster: str
    node: str
    generation: int
    txid: int
    last_generation: int
    #: ``generation_of(txid)`` is the generation of a transaction still in the master's log,
    #: or None when the log no longer holds it (or never did).
    generation_of: Callable[[int], int | None]
    stateful: bool
    accepting: bool  #: False when the replica limit is reached
    names_in_use: frozenset[str]
    keepalive_interval: float
    #: the master's history (see `hakit.protocol._history`)
    history: h.History = ()


def decide_handshake(hello: m.Hello, view: MasterView) -> tuple[m.Welcome | m.Reject, m.SyncKind]:
    """Answer a replica's `Hello`: accept with a sync plan, or refuse with a reason.

    A refusal's stop reason is HANDSHAKE_FAILED, for good, except for a name already
    attached: CONNECTION_ABORTED, which a replica waits out.

    Returns:
        The message to send back and the sync plan (meaningless for a `Reject`).
    """

    def reject(
        detail: str, reason: StopReason = StopReason.HANDSHAKE_FAILED
    ) -> tuple[m.Reject, m.SyncKind]:
        return m.Reject(view.generation, int(reason), detail), m.SyncKind.FULL

    if hello.version != m.PROTOCOL_VERSION:
        return reject(
            f"protocol version {hello.version} is not supported (the master speaks "
            f"version {m.PROTOCOL_VERSION})"
        )
    if hello.cluster != view.cluster:
        return reject(f"cluster {hello.cluster!r} is not this master's cluster {view.cluster!r}")
    if hello.node == view.node:
        return reject(f"replica name {hello.node!r} is the master's own name")
    if hello.node in view.names_in_use:
        # Not HANDSHAKE_FAILED: usually the same replica back after a crash or a restart,
        # before this master has seen its old link end (a cut cable says nothing until a
        # timeout). It waits and tries again, as for a node not yet a master; the old link
        # is never replaced, or anyone who knew a replica's name could cut it off.
        return reject(
            f"a replica named {hello.node!r} is already attached (the master has not yet "
            "seen its old link end)",
            StopReason.CONNECTION_ABORTED,
        )
    try:
        history = h.from_wire(hello.history)
    except RemoteProtocolError as exc:
        return reject(f"bad history from the replica: {exc}")
    if not view.accepting:
        return reject("the master already serves its maximum number of replicas")
    force_sync = bool(hello.flags & m.HelloFlags.FORCE_SYNC)
    if hello.generation > view.generation:
        seen = (
            f"the replica has seen generation {hello.generation}, newer than this master's "
            f"{view.generation}"
        )
        if h.descends_from(history, view.history):
            return reject(f"{seen}, a node was promoted from this master's history: this "
                          "master is stale")  # fmt: skip
        if not force_sync:
            # A higher number alone proves nothing (anyone can send one): the replica is
            # refused, and the master stays the master (see `proves_newer_history`). The
            # replica holds a branch of its own (a node promoted by hand beside this master);
            # only its operator can give that branch up, by attaching with FORCE_SYNC.
            return reject(
                f"{seen}, on a history that does not continue this master's: refused (attach "
                "with FORCE_SYNC to discard the replica's own branch and load this master's)"
            )
        # FORCE_SYNC: the replica gives up its branch and its generation and loads ours in
        # full (what it discards is kept, see `Diverged`); the master's generation stays.
    common = common_txid(hello.txid, hello.last_generation, history, view)
    if force_sync:
        sync = m.SyncKind.FULL
    else:
        sync = plan_sync(hello.txid, hello.last_generation, view, history)
    welcome = m.Welcome(
        view.generation, view.node, view.txid, int(sync), view.keepalive_interval,
        h.to_wire(view.history), common,
    )  # fmt: skip
    return welcome, sync


def proves_newer_history(hello: m.Hello, view: MasterView) -> bool:
    """Whether `hello` proves this master was superseded, so that it must step down.

    Proof is a newer generation on a history that continues this master's current one (a
    node holding this master's history was promoted). A generation number alone is not
    proof: a stranger, a node of another cluster or a node promoted elsewhere by hand could
    send any number, and one frame must not depose a master.
    """
    if hello.cluster != view.cluster or hello.version != m.PROTOCOL_VERSION:
        return False
    if hello.generation <= view.generation:
        return False
    try:
        history = h.from_wire(hello.history)
    except RemoteProtocolError:
        return False
    return h.descends_from(history, view.history)


def common_txid(txid: int, last_generation: int, history: h.History, view: MasterView) -> int:
    """The last txid a replica holding ``(txid, last_generation, history)`` shares.

    A full sync discards the replica's transactions after it.
    """
    common = h.common_txid(history, txid, view.history, view.txid)
    if common == txid and txid > 0:
        # Databases from before history ids name nothing: their transactions' generations
        # are the only evidence left, where the master still holds them.
        generation = view.last_generation if txid == view.txid else view.generation_of(txid)
        if generation is not None and generation != last_generation:
            return 0  # where they part is unknown: everything the replica holds is at stake
    return common


def plan_sync(
    txid: int, last_generation: int, view: MasterView, history: h.History = ()
) -> m.SyncKind:
    """Choose how to bring a replica holding ``(txid, last_generation, history)`` up to date.

    A replica is on the master's history when its transaction `txid` belongs to the same
    history id on both (see `hakit.protocol._history`) and, where the master still knows it,
    has the same generation. Then, equal txids need no load, and a master whose log still
    holds every later transaction replays only those (when `stateful`). Anything else,
    including an empty replica, a replica ahead of the master or one on another history,
    gets a full snapshot.
    """
    if txid > view.txid:
        return m.SyncKind.FULL
    same_id = h.history_id_at(history, txid) == h.history_id_at(view.history, txid)
    if txid == view.txid and same_id and last_generation == view.last_generation:
        return m.SyncKind.EQUAL
    if not view.stateful:
        return m.SyncKind.FULL
    # An empty replica has no history to extend: it gets a snapshot, the cheaper way to
    # ship a whole database.
    on_history = txid > 0 and same_id and view.generation_of(txid) == last_generation
    if on_history and (txid == view.txid or view.generation_of(txid + 1) is not None):
        return m.SyncKind.INCREMENTAL
    return m.SyncKind.FULL


class LinkState(enum.Enum):
    """Where a master's link to one replica stands."""

    SYNCING = "syncing"
    STREAMING = "streaming"
    PROMOTING = "promoting"
    KILLED = "killed"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Acked:
    """The replica applied every transaction up to `txid`."""

    txid: int


@dataclass(frozen=True, slots=True)
class LinkSynced:
    """The replica finished its initial sync."""

    txid: int


@dataclass(frozen=True, slots=True)
class ReplicaLeft:
    """The replica stopped by itself (`Bye`) or broke the protocol; close the link."""

    reason: StopReason
    detail: str


@dataclass(frozen=True, slots=True)
class PromoteRequested:
    """The replica asks to take over: pause commits, then send `PromoteReady`."""


@dataclass(frozen=True, slots=True)
class KillRequested:
    """The replica holds everything and tells this master to step down."""

    generation: int
    node: str
    address: str | None


LinkEvent = Acked | LinkSynced | ReplicaLeft | PromoteRequested | KillRequested


class MasterLinkMachine:
    """The master's half of the protocol for one attached replica.

    Args:
        replica: the replica's name.
        generation: the master's generation.
        sync_target: the txid at which the replica counts as synced.
        txid: the replica's acknowledged position: the txid it said it holds, or 0 for a
            `FULL` sync (a snapshot replaces the replica's history, so its old position, which
            may be ahead of the master's, counts for nothing).
        keepalive_interval: send a `KeepAlive` after this long without sending (0 disables).
        detach_timeout: close the link when the replica is silent this long (0 disables).
            Not applied while it syncs: a replica loading a snapshot has nothing to say.
        initial_timeout: close the link when the initial sync takes longer (0 disables).
        now: the current time.
    """

    def __init__(
        self,
        *,
        replica: str,
        generation: int,
        sync_target: int,
        txid: int,
        keepalive_interval: float = 0.0,
        detach_timeout: float = 0.0,
        initial_timeout: float = 0.0,
        now: float,
    ) -> None:
        self.replica = replica
        self.generation = generation
        self.sync_target = sync_target
        self.acked = txid
        self.keepalive_interval = keepalive_interval
        self.detach_timeout = detach_timeout
        self.initial_timeout = initial_timeout
        self._sync_deadline = now + initial_timeout if initial_timeout else float("inf")
        self.state = LinkState.SYNCING
        self.last_sent = now
        self.last_heard = now
        self.sent_txid = txid
        self.pause_txid: int | None = None

    @property
    def next_deadline(self) -> float:
        """When `tick` must next be called (``inf`` when nothing is timed)."""
        if self.state in (LinkState.CLOSED, LinkState.KILLED):
            return float("inf")
        deadline = float("inf")
        if self.keepalive_interval:
            deadline = self.last_sent + self.keepalive_interval
        if self.state is LinkState.SYNCING:
            deadline = min(deadline, self._sync_deadline)
        elif self.detach_timeout:
            deadline = min(deadline, self.last_heard + self.detach_timeout)
        return deadline

    def sent(self, now: float, txid: int | None = None) -> None:
        """Record that frames (up to transaction `txid`, if any) were sent at `now`."""
        self.last_sent = now
        if txid is not None and txid > self.sent_txid:
            self.sent_txid = txid

    def tick(self, now: float) -> m.KeepAlive | ReplicaLeft | None:
        """Return the keep-alive due now, or `ReplicaLeft` when the replica fell silent."""
        if self.state in (LinkState.CLOSED, LinkState.KILLED):
            return None
        if self.state is LinkState.SYNCING and now >= self._sync_deadline:
            self.state = LinkState.CLOSED
            return ReplicaLeft(
                StopReason.CONNECTION_ABORTED,
                f"replica {self.replica!r} did not finish its initial sync within "
                f"{self.initial_timeout:g} s (initial_timeout)",
            )
        if (
            self.state is not LinkState.SYNCING
            and self.detach_timeout
            and now >= self.last_heard + self.detach_timeout
        ):
            self.state = LinkState.CLOSED
            return ReplicaLeft(
                StopReason.CONNECTION_ABORTED,
                f"replica {self.replica!r} silent for {self.detach_timeout:g} s (detach_timeout)",
            )
        if self.keepalive_interval and now >= self.last_sent + self.keepalive_interval:
            self.last_sent = now
            return m.KeepAlive(self.generation, self.sent_txid)
        return None

    def pause_ready(self, txid: int) -> m.PromoteReady:
        """Commits are paused with every committed transaction <= `txid` sent."""
        if self.state is not LinkState.PROMOTING:
            raise LocalProtocolError("pause_ready without a promote request")
        self.pause_txid = txid
        return m.PromoteReady(self.generation, txid)

    def receive(self, msg: m.Message, now: float) -> LinkEvent:
        """Process one message from the replica.

        A protocol violation becomes `ReplicaLeft(CONNECTION_ABORTED)`: it ends this link only.
        """
        if self.state in (LinkState.CLOSED, LinkState.KILLED):
            raise LocalProtocolError("the link is closed")
        self.last_heard = now
        try:
            return self._receive(msg)
        except RemoteProtocolError as exc:
            self.state = LinkState.CLOSED
            return ReplicaLeft(exc.stop_reason, f"protocol error from the replica: {exc}")

    def receive_value(self, value: Any, now: float) -> LinkEvent | None:
        """Process one decoded frame from the replica: ``receive(parse_message(value), now)``.

        The frame a master reads most, one per replica per commit, is an `Ack` of the link's
        generation while it streams. Such an ack is checked and taken here as `receive` would
        take it, without building the message or the event: None stands for the
        ``Acked(self.acked)`` that `receive` would return. Anything else (another message or
        generation, a txid outside ``[acked, sent_txid]``, a malformed frame, a link syncing,
        promoting or closed) takes the generic path, with its checks and its words.

        Returns:
            None for an acknowledgement up to `acked` (now updated), meaning `Acked(acked)`;
            otherwise what `receive` returns (never None, but maybe `Acked` too).

        Raises:
            RemoteProtocolError: `value` is not a message (see `parse_message`). Nothing
                changed: the caller ends the link, as for an undecodable frame.
            LocalProtocolError: the link is closed (see `receive`).
        """
        if type(value) is list and len(value) == 3 and self.state is LinkState.STREAMING:
            kind, generation, txid = value
            # Exact types first: parse_message refuses a bool or a float where it wants an
            # int, and True == 1, 8.0 == 8. A txid within [acked, sent_txid] is a counter, and
            # so is the link's generation: parse_message would accept the frame as is.
            if (
                type(kind) is int
                and kind == _ACK
                and type(generation) is int
                and generation == self.generation
                and type(txid) is int
                and self.acked <= txid <= self.sent_txid
            ):
                self.last_heard = now
                self.acked = txid
                return None
        return self.receive(m.parse_message(value), now)

    def _receive(self, msg: m.Message) -> LinkEvent:
        if isinstance(msg, m.KillMaster):
            return self._kill(msg)
        if msg.generation > self.generation:
            # An attached replica speaks the link's generation: a newer one proves nothing
            # (only a valid KillMaster deposes a master), it only breaks the protocol.
            raise RemoteProtocolError(
                f"{type(msg).__name__} from generation {msg.generation}, "
                f"not the link's {self.generation}"
            )
        if isinstance(msg, m.Ack):
            if msg.txid < self.acked or msg.txid > self.sent_txid:
                raise RemoteProtocolError(
                    f"ack for txid {msg.txid} outside [{self.acked}, {self.sent_txid}]"
                )
            self.acked = msg.txid
            if self.state is LinkState.SYNCING and msg.txid >= self.sync_target:
                self.state = LinkState.STREAMING
                return LinkSynced(msg.txid)
            return Acked(msg.txid)
        if isinstance(msg, m.Bye):
            self.state = LinkState.CLOSED
            try:
                reason = StopReason(msg.stop_reason)
            except ValueError:
                reason = StopReason.CONNECTION_ABORTED
            return ReplicaLeft(reason, msg.detail)
        if isinstance(msg, m.PromoteRequest) and self.state is LinkState.STREAMING:
            self.state = LinkState.PROMOTING
            return PromoteRequested()
        raise RemoteProtocolError(f"unexpected {type(msg).__name__} while {self.state.value}")

    def _kill(self, msg: m.KillMaster) -> LinkEvent:
        if self.state is not LinkState.PROMOTING or self.pause_txid is None:
            raise RemoteProtocolError("KillMaster without a completed promote request")
        if msg.generation != self.generation + 1:
            raise RemoteProtocolError(
                f"KillMaster for generation {msg.generation}, expected {self.generation + 1}"
            )
        if self.acked != self.pause_txid:
            raise RemoteProtocolError(
                f"KillMaster from a replica that acked {self.acked}, not {self.pause_txid}"
            )
        self.state = LinkState.KILLED
        return KillRequested(msg.generation, msg.node, msg.address)
