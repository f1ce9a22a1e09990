r"""The replica side of one attach session, as a sans-I/O state machine.

Theory of operation: the runtime sends `hello()`, then feeds every received message to
`receive(message, now)` and acts on the events it returns, in order (apply these entries,
begin a load, send this message, stop). Time only enters as `now`; `next_deadline` tells the
runtime when to call `tick(now)`, which is how a silent master is detected.

States::

    HANDSHAKING --Welcome(EQUAL/INCREMENTAL)--> STREAMING --PromoteReady--> PROMOTING
         |        \--Welcome(FULL)--> LOADING --SnapshotEnd--/                 |
         +--Reject / Detach / error / timeout --> STOPPED <--MasterKilled--------+

Every transaction entry is checked before it is handed out: txids must follow on exactly and
generations never go back, so a replica can never apply a gap or a stale master's history.
The one way back to an older generation is a full load the replica asked for with
`force_sync`: its operator gives up a branch of the replica's own (a node promoted by hand
beside the master) for the master's, and what the load discards is reported (`Diverged`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import _history as h
from . import _messages as m
from ._errors import LocalProtocolError, RemoteProtocolError
from ._stop import StopReason


class ReplicaState(enum.Enum):
    """Where a replica's attach session stands."""

    HANDSHAKING = "handshaking"
    LOADING = "loading"
    STREAMING = "streaming"
    PROMOTING = "promoting"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Welcomed:
    """The master accepted us and chose how to sync; `history` is the master's.

    For `EQUAL` and `INCREMENTAL` syncs, adopt `history` now; a `FULL` load adopts it
    atomically with the loaded data (`LoadEnd`), never before.
    """

    master: str
    sync: m.SyncKind
    txid: int
    history: h.History = ()


@dataclass(frozen=True, slots=True)
class Diverged:
    """Our transactions `first`..`last` are not on the master's history.

    The full load that follows discards them: keep them where the user can read them first.
    """

    master: str
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class LoadBegin:
    """A full load starts: stage a new database, keep serving reads from the old one."""

    txid: int
    last_generation: int
    count: int


@dataclass(frozen=True, slots=True)
class LoadChunk:
    """Part of the snapshot as a flat ``[k1, v1, ...]`` list."""

    items: list[Any]


@dataclass(frozen=True, slots=True)
class LoadEnd:
    """The snapshot is complete: make the staged database current at `txid`."""

    txid: int
    last_generation: int
    generation: int
    history: h.History = ()


#: A `PackedTxns` batch is checked and handed out this many entries at a time: few enough
#: that their decoded lists never reach the garbage collector's first threshold (700 new
#: containers), so they are freed young, by reference counting, never promoted.
APPLY_BATCH = 64


@dataclass(frozen=True, slots=True)
class Apply:
    """Apply these entries (``[txid, generation, ops]``, already checked) in order.

    `packed` holds the entries as the master packed them, back to back, when the message
    came packed (`PackedTxns`): keep those bytes rather than packing again. `ack` says whether
    to acknowledge now (`ReplicaMachine.ack`): a batch handed out in several pieces is
    acknowledged once, after its last piece.
    """

    entries: list[m.Entry]
    packed: bytes | None = None
    ack: bool = True


@dataclass(frozen=True, slots=True)
class Synced:
    """The replica now holds everything the master had when it was welcomed.

    Send `ReplicaMachine.ack` now, before acting on the events that follow: the master's link
    counts the replica as synced only once it sees that ack, and refuses a force-master
    `PromoteRequest` (which may come next) before it.
    """

    txid: int


@dataclass(frozen=True, slots=True)
class Send:
    """Send this message to the master."""

    message: m.Message


@dataclass(frozen=True, slots=True)
class Promoted:
    """The old master stepped down: this node is the master of `generation`."""

    generation: int


@dataclass(frozen=True, slots=True)
class FollowMaster:
    """The master was replaced; reconnect to the new one at `address`."""

    node: str
    address: str | None
    generation: int


@dataclass(frozen=True, slots=True)
class Stopped:
    """Replication stopped for `reason`; the link must be closed."""

    reason: StopReason
    detail: str


ReplicaEvent = (
    Welcomed | Diverged | LoadBegin | LoadChunk | LoadEnd | Apply | Synced | Send | Promoted
    | FollowMaster | Stopped
)  # fmt: skip


class ReplicaMachine:
    """The replica's half of the replication protocol for one connection.

    Args:
        cluster: the cluster name both sides must share.
        node: this replica's name.
        generation: this node's persisted generation.
        txid: the txid of the last transaction this node holds.
        last_generation: the generation of that transaction.
        force_master: take over as master once synced (`FORCE_MASTER`).
        force_sync: ask for a full load even when the databases look equal (`FORCE_SYNC`).
        address: where this node would serve replicas as master.
        history: this node's history (see `hakit.protocol._history`).
        wait_data_timeout: stop with `CONNECTION_ABORTED` when the master is silent this long
            (seconds; 0 disables).
        now: the current time.
    """

    def __init__(
        self,
        *,
        cluster: str,
        node: str,
        generation: int,
        txid: int,
        last_generation: int,
        force_master: bool = False,
        force_sync: bool = False,
        address: str | None = None,
        history: h.History = (),
        wait_data_timeout: float = 0.0,
        now: float,
    ) -> None:
        self.cluster = cluster
        self.node = node
        self.generation = generation
        self.txid = txid
        self.last_generation = last_generation
        self.force_master = force_master
        self.force_sync = force_sync
        self.address = address
        self.history = history
        self.wait_data_timeout = wait_data_timeout
        self.state = ReplicaState.HANDSHAKING
        self.master: str | None = None
        #: How the master chose to sync us, once welcomed.
        self.sync_kind: m.SyncKind | None = None
        self._loaded: int | None = None
        self._snapshot = (0, 0)
        self.stop_reason: StopReason | None = None
        self._target: int | None = None  # txid at which we count as synced
        self._synced = False
        self._kill_sent = False  # KillMaster sent: only now may MasterKilled promote us
        self._last_heard = now

    @property
    def synced(self) -> bool:
        """Whether the replica has caught up with the master's state at the handshake."""
        return self._synced

    @property
    def next_deadline(self) -> float:
        """When `tick` must next be called (``inf`` when nothing is timed)."""
        if self.state is ReplicaState.STOPPED or not self.wait_data_timeout:
            return float("inf")
        return self._last_heard + self.wait_data_timeout

    def hello(self) -> m.Hello:
        """Return the handshake message that opens the session."""
        flags = m.HelloFlags.NONE
        if self.force_master:
            flags |= m.HelloFlags.FORCE_MASTER
        if self.force_sync:
            flags |= m.HelloFlags.FORCE_SYNC
        return m.Hello(
            self.generation, m.PROTOCOL_VERSION, self.cluster, self.node, self.txid,
            self.last_generation, int(flags), self.address, h.to_wire(self.history),
        )  # fmt: skip

    def tick(self, now: float) -> Stopped | None:
        """Check timers; return `Stopped` when the master has been silent too long."""
        if now >= self.next_deadline:
            return self._stop(
                StopReason.CONNECTION_ABORTED,
                f"no data from the master for {self.wait_data_timeout:g} s (wait_data_timeout)",
            )
        return None

    def stop(self, reason: StopReason, detail: str) -> m.Bye | None:
        """Stop locally; return the `Bye` to send to the master, if the link is still usable."""
        was_running = self.state is not ReplicaState.STOPPED
        self._stop(reason, detail)
        return m.Bye(self.generation, int(reason), detail) if was_running else None

    def connection_lost(self, detail: str) -> Stopped:
        """Record that the link broke."""
        if self.state is ReplicaState.STOPPED:
            assert self.stop_reason is not None
            return Stopped(self.stop_reason, detail)
        return self._stop(StopReason.CONNECTION_ABORTED, detail)

    def receive(self, message: m.Message, now: float) -> list[ReplicaEvent]:
        """Process one message from the master and return what the runtime must do.

        A protocol violation by the master ends the session: the result is a `Stopped` event,
        never an exception, because a bad master must not take the replica's node down.
        """
        return list(self.receive_iter(message, now))

    def receive_iter(self, message: m.Message, now: float) -> Iterator[ReplicaEvent]:
        """Like `receive`, but each event is made only once the one before was taken.

        For a `PackedTxns`, entries are decoded and checked `APPLY_BATCH` at a time, as the
        `Apply` events are consumed: act on each (apply it) before taking the next. An entry
        found bad stops the session there; the entries before it, already handed out, are
        committed transactions of the master in order, so applying them was right (a
        transaction is the unit of atomicity, never a frame, which the master cuts where it
        likes). The state (`txid`) always counts exactly what was handed out.
        """
        if self.state is ReplicaState.STOPPED:
            raise LocalProtocolError("the replica session has stopped")
        self._last_heard = now
        try:
            yield from self._receive(message)
        except RemoteProtocolError as exc:
            yield self._stop(exc.stop_reason, f"protocol error from the master: {exc}")

    def take_txns(self, payload: bytes, now: float) -> tuple[list[m.Entry], bytes] | None:
        """Take the usual frame of a synced replica in one call, or leave it untouched.

        The usual frame is a `Txns` payload left packed (`DecodeLimits.raw_kinds`) holding
        at most `APPLY_BATCH` entries that follow on from `txid`, each of the usual kind
        (see `_usual_entries`), from a master of our generation or newer. For it this does
        what `receive_iter` does with it, without the events: it moves `txid` past the
        entries and returns them with their packed bytes, to be applied and then
        acknowledged (`ack`), as its one `Apply` would be.

        Returns:
            ``(entries, packed)``; or None for any other frame, with nothing changed: hand
            it to `receive_iter`, which gives the full verdict.
        """
        if self.state is not ReplicaState.STREAMING or not self._synced:
            return None
        head = m.txns_head(payload)
        if head is None:
            return None
        generation, start, count = head
        if generation < self.generation or not 0 < count <= APPLY_BATCH:
            return None
        blob = payload[start:]
        try:
            entries = m.decode_entries(blob, count)
        except RemoteProtocolError:
            return None
        if not self._usual_entries(entries):
            return None
        self._last_heard = now
        return entries, blob

    def _receive(self, msg: m.Message) -> list[ReplicaEvent] | Iterator[ReplicaEvent]:
        if msg.generation < self.generation and not isinstance(msg, m.Reject | m.Welcome):
            raise RemoteProtocolError(
                f"{type(msg).__name__} from generation {msg.generation}, older than ours "
                f"({self.generation}): a stale master"
            )
        state = self.state
        if isinstance(msg, m.Reject):
            reason = _reason(msg.stop_reason, StopReason.HANDSHAKE_FAILED)
            if reason not in _MASTER_REASONS:  # e.g. BECOMES_MASTER: only we can decide that
                reason = StopReason.HANDSHAKE_FAILED
            return [self._stop(reason, msg.detail)]
        if isinstance(msg, m.Detach):
            return [self._stop(StopReason.MASTER_REQUESTED_DISCONNECT, msg.detail)]
        if state is ReplicaState.HANDSHAKING:
            if not isinstance(msg, m.Welcome):
                raise RemoteProtocolError(f"expected Welcome, got {type(msg).__name__}")
            return self._welcome(msg)
        if state is ReplicaState.LOADING:
            if isinstance(msg, m.KeepAlive):
                return []  # liveness only: no Ack, our txid means nothing until LoadEnd
            return self._loading(msg)
        if isinstance(msg, m.Txns):
            return self._txns(msg)
        if isinstance(msg, m.PackedTxns):
            return self._packed_txns(msg)
        if isinstance(msg, m.KeepAlive):
            return [Send(m.Ack(self.generation, self.txid))]
        if isinstance(msg, m.PromoteReady) and state is ReplicaState.PROMOTING:
            if msg.txid != self.txid:
                raise RemoteProtocolError(
                    f"master paused at txid {msg.txid} but we hold {self.txid}"
                )
            self._kill_sent = True
            return [Send(m.KillMaster(self.generation + 1, self.node, self.address))]
        if isinstance(msg, m.MasterKilled) and self._kill_sent:
            if msg.generation != self.generation + 1:
                raise RemoteProtocolError(f"MasterKilled for generation {msg.generation}")
            self.generation = msg.generation
            self._stop(StopReason.BECOMES_MASTER, "this node is now the master")
            return [Promoted(msg.generation)]
        if isinstance(msg, m.MasterChanged):
            self._stop(StopReason.MASTER_REQUESTED_DISCONNECT, f"the master is now {msg.node}")
            return [FollowMaster(msg.node, msg.address, msg.generation)]
        raise RemoteProtocolError(f"unexpected {type(msg).__name__} while {state.value}")

    def _welcome(self, msg: m.Welcome) -> list[ReplicaEvent]:
        sync = m.SyncKind(msg.sync) if msg.sync in m.SyncKind._value2member_map_ else None
        if sync is None:
            raise RemoteProtocolError(f"unknown sync kind {msg.sync}")
        history = h.from_wire(msg.history)
        if not 0 <= msg.common <= self.txid:
            raise RemoteProtocolError(f"common txid {msg.common} outside [0, {self.txid}]")
        if msg.generation < self.generation and not (self.force_sync and sync is m.SyncKind.FULL):
            # Only a full load we asked for (FORCE_SYNC: the operator gives up this node's
            # branch) may take us back to an older generation; anything else is a stale master.
            raise RemoteProtocolError(
                f"Welcome from generation {msg.generation}, older than ours "
                f"({self.generation}): a stale master"
            )
        self.master = msg.master
        self.sync_kind = sync
        self.generation = msg.generation
        self._target = msg.txid
        self.history = history
        events: list[ReplicaEvent] = [Welcomed(msg.master, sync, msg.txid, history)]
        if sync is m.SyncKind.FULL:
            if msg.common < self.txid:
                events.append(Diverged(msg.master, msg.common + 1, self.txid))
            self.state = ReplicaState.LOADING
            return events
        if msg.common != self.txid:
            raise RemoteProtocolError(
                f"{sync.name} sync, but the master shares only up to txid {msg.common} "
                f"of our {self.txid}"
            )
        if sync is m.SyncKind.EQUAL and msg.txid != self.txid:
            raise RemoteProtocolError(
                f"master claims equal at txid {msg.txid}, we hold {self.txid}"
            )
        if sync is m.SyncKind.INCREMENTAL and msg.txid < self.txid:
            raise RemoteProtocolError(f"incremental resync back to txid {msg.txid}")
        self.state = ReplicaState.STREAMING
        events.extend(self._check_synced())
        return events

    def _loading(self, msg: m.Message) -> list[ReplicaEvent]:
        if isinstance(msg, m.SnapshotBegin) and self._loaded is None:
            self._loaded = 0
            self._snapshot = (msg.txid, msg.last_generation)
            return [LoadBegin(msg.txid, msg.last_generation, msg.count)]
        if isinstance(msg, m.SnapshotChunk) and self._loaded is not None:
            if len(msg.items) % 2:
                raise RemoteProtocolError("snapshot chunk with an odd number of items")
            for key in msg.items[::2]:
                if not isinstance(key, str | bytes):
                    raise RemoteProtocolError(
                        f"snapshot key {m._short(key)} is neither str nor bytes"
                    )
            self._loaded += len(msg.items) // 2
            return [LoadChunk(msg.items)]
        if isinstance(msg, m.SnapshotEnd) and self._loaded is not None:
            txid, last_generation = self._snapshot
            if msg.txid != txid or msg.count != self._loaded:
                raise RemoteProtocolError(
                    f"snapshot ended at txid {msg.txid} with {msg.count} keys, "
                    f"but began at {txid} and delivered {self._loaded}"
                )
            self.txid, self.last_generation = txid, last_generation
            self.state = ReplicaState.STREAMING
            end = LoadEnd(txid, last_generation, self.generation, self.history)
            return [end, *self._check_synced()]
        raise RemoteProtocolError(f"unexpected {type(msg).__name__} during the initial load")

    def _txns(self, msg: m.Txns) -> list[ReplicaEvent]:
        self._check_entries(msg.entries)
        if self._synced:
            return [Apply(msg.entries)]  # the usual case, once per batch on every replica
        return [Apply(msg.entries), *self._check_synced()]

    def _packed_txns(self, msg: m.PackedTxns) -> Iterator[ReplicaEvent]:
        if msg.count <= APPLY_BATCH:  # the usual frame (one commit's): in one piece
            entries, packed = msg.decode()
            self._check_entries(entries)
            yield Apply(entries, packed)
            if not self._synced:
                yield from self._check_synced()
            return
        for entries, packed, last in msg.batches(APPLY_BATCH):
            if self.state is ReplicaState.STOPPED:
                return  # stopped meanwhile (a timer, a local stop): nothing more is handed out
            self._check_entries(entries)
            yield Apply(entries, packed, ack=last)
        yield from self._check_synced()

    def _check_entries(self, entries: list[Any]) -> None:
        """Check that `entries` follow on from `txid`, and move `txid` past them."""
        if not self._usual_entries(entries):
            self._check_any_entries(entries)

    def _usual_entries(self, entries: list[Any]) -> bool:
        """Accept `entries` if each is the usual kind: puts of str keys, in order.

        Once per transaction on every replica, so a single pass of the cheapest tests; on
        anything else it accepts nothing, and `_check_any_entries` gives the full verdict.
        """
        txid, last_generation, generation = self.txid, self.last_generation, self.generation
        for entry in entries:
            if type(entry) is not list or len(entry) != 3:
                return False
            entry_txid, entry_generation, ops = entry
            if (
                type(entry_txid) is not int
                or entry_txid != txid + 1
                or type(entry_generation) is not int
                or not last_generation <= entry_generation <= generation
                or type(ops) is not list
            ):
                return False
            for op in ops:
                # [OP_PUT (0), str, value]; a bool is no tag (type is not int).
                if type(op) is not list or len(op) != 3 or type(op[0]) is not int or op[0]:
                    return False
                if type(op[1]) is not str:
                    return False
            txid, last_generation = entry_txid, entry_generation
        self.txid, self.last_generation = txid, last_generation
        return True

    def _check_any_entries(self, entries: list[Any]) -> None:
        txid, last_generation = self.txid, self.last_generation
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], list)):
                raise RemoteProtocolError(f"malformed transaction entry {m._short(entry)}")
            if type(entry[0]) is not int or entry[0] != txid + 1:
                raise RemoteProtocolError(f"transaction {entry[0]!r} does not follow {txid}")
            if type(entry[1]) is not int or not last_generation <= entry[1] <= self.generation:
                raise RemoteProtocolError(f"transaction {entry[0]} has generation {entry[1]!r}")
            for op in entry[2]:
                # The usual op, a put of a str key, is checked inline (once per op of every
                # transaction on every replica); anything else gets op_error's full verdict.
                if (
                    type(op) is list
                    and len(op) == 3
                    and type(op[0]) is int
                    and op[0] == m.OP_PUT
                    and type(op[1]) is str
                ):
                    continue
                problem = m.op_error(op)
                if problem is not None:
                    raise RemoteProtocolError(f"transaction {entry[0]}: {problem}")
            txid, last_generation = entry[0], entry[1]
        self.txid, self.last_generation = txid, last_generation

    def _check_synced(self) -> list[ReplicaEvent]:
        if self._synced or self._target is None or self.txid < self._target:
            return []
        self._synced = True
        events: list[ReplicaEvent] = [Synced(self.txid)]
        if self.force_master:
            self.state = ReplicaState.PROMOTING
            events.append(Send(m.PromoteRequest(self.generation)))
        return events

    def ack(self) -> m.Ack:
        """Return the cumulative acknowledgement for everything handed out so far."""
        return m.Ack(self.generation, self.txid)

    def _stop(self, reason: StopReason, detail: str) -> Stopped:
        if self.state is not ReplicaState.STOPPED:
            self.state = ReplicaState.STOPPED
            self.stop_reason = reason
        return Stopped(reason, detail)


#: The stop reasons a master may give in a `Reject`; the others are the replica's own.
_MASTER_REASONS = frozenset(
    {
        StopReason.CONNECTION_ABORTED,
        StopReason.MASTER_REQUESTED_DISCONNECT,
        StopReason.HANDSHAKE_FAILED,
    }
)


def _reason(value: int, default: StopReason) -> StopReason:
    try:
        return StopReason(value)
    except ValueError:
        return default
