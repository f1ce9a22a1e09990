"""Parameters, flags and small result records of the runtime API (DESIGN 4.1, 4.2)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..protocol import InvalidArgumentError, StopReason


class Role(enum.Enum):
    """What a node currently does."""

    STANDALONE = "standalone"
    MASTER = "master"
    REPLICA = "replica"


class MasterMode(enum.Flag):
    """How a master replicates (combine with ``|``)."""

    NONE = 0
    #: Commits return once queued; replicas are not waited for (lag bounded by a buffer).
    ASYNC = enum.auto()
    #: Full syncs stream a snapshot while writes continue (without it, writes wait).
    HOTSYNC = enum.auto()
    #: Keep recent transactions so a returning replica replays only what it missed.
    STATEFUL = enum.auto()


class ReplicaMode(enum.Flag):
    """How a replica attaches (combine with ``|``)."""

    NONE = 0
    #: Sync, then take over as master (KILL_MASTER) and return `BECOMES_MASTER`.
    FORCE_MASTER = enum.auto()
    #: Always load a full snapshot, even when the databases look equal. Also the one way back
    #: for a node that holds a branch of its own (promoted by hand beside the master, it reached
    #: a newer generation, which the master refuses to trust): it gives up that branch and its
    #: generation for the master's, keeping what it discards in `Node.discarded()`.
    FORCE_SYNC = enum.auto()
    #: Open a cancel point at `ReplicaParams.cancel_address` for `hakit.cancel`.
    ALLOW_CANCEL = enum.auto()


class AckPolicy(enum.Enum):
    """Which acknowledgements a synchronous commit waits for."""

    ALL = "all"  #: every attached replica
    QUORUM = "quorum"  #: a majority of the attached replicas
    ONE = "one"  #: any one replica
    NONE = "none"  #: none (the commit does not wait)


class Notification(enum.Enum):
    """Replica-side notifications passed to `ReplicaParams.on_notification`."""

    CONNECTED = "connected"
    DB_EQUAL = "db_equal"
    DB_LOAD_BEGIN = "db_load_begin"
    DB_LOAD_OK = "db_load_ok"
    DB_LOAD_FAILED = "db_load_failed"
    STATEFUL_SYNC = "stateful_sync"
    STATEFUL_SYNC_END = "stateful_sync_end"
    COMMIT_FAILED = "commit_failed"
    #: the replica's history diverged from the master's; the detail names the txids discarded
    HISTORY_DIVERGED = "history_diverged"
    MASTER_CHANGED = "master_changed"
    REPLICA_STOPPED = "replica_stopped"


def _check_times(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise InvalidArgumentError(f"{name} must be a number of seconds >= 0, got {value!r}")


@dataclass(frozen=True)
class MasterParams:
    """How a master serves its replicas. All times are seconds; 0 disables a timer.

    Attributes:
        mode: `MasterMode` flags; default hot sync with incremental resync.
        max_replicas: how many replicas may be attached at once.
        ack_policy: which acknowledgements a synchronous commit waits for.
        quorum: the minimum number of attached replicas for a write; below it a commit raises
            `NoQuorumError` before changing anything.
        commit_timeout: how long an asynchronous commit may wait for buffer space before the
            replica that holds it up is detached.
        synch_timeout: how long a synchronous commit waits for an acknowledgement before the
            silent replica is detached.
        initial_timeout: how long a new connection may take to send its handshake, and a
            replica to finish its initial sync.
        detach_timeout: detach a replica that has been silent this long.
        keepalive_interval: send a keep-alive after this long without traffic.
        async_buffer_bytes: the most unsent bytes an asynchronous replica may lag behind.
        trans_log_length: how many recent transactions are kept for incremental resync.
        disable_writes_on_kill: refuse writes after a replica took over (force master).
    """

    mode: MasterMode = MasterMode.HOTSYNC | MasterMode.STATEFUL
    max_replicas: int = 16
    ack_policy: AckPolicy = AckPolicy.ALL
    quorum: int = 0
    commit_timeout: float = 5.0
    synch_timeout: float = 2.0
    initial_timeout: float = 10.0
    detach_timeout: float = 10.0
    keepalive_interval: float = 1.0
    async_buffer_bytes: int = 8 * 1024 * 1024
    trans_log_length: int = 100_000
    disable_writes_on_kill: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.mode, MasterMode):
            raise InvalidArgumentError(f"mode must be MasterMode flags, got {self.mode!r}")
        if not isinstance(self.ack_policy, AckPolicy):
            raise InvalidArgumentError(f"ack_policy must be an AckPolicy, got {self.ack_policy!r}")
        for name in ("max_replicas", "quorum", "async_buffer_bytes", "trans_log_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgumentError(f"{name} must be an integer >= 0, got {value!r}")
        if self.max_replicas < 1:
            raise InvalidArgumentError("max_replicas must be at least 1")
        if self.quorum > self.max_replicas:
            raise InvalidArgumentError(
                f"quorum {self.quorum} can never be met with max_replicas {self.max_replicas}"
            )
        if self.async_buffer_bytes < 1024:
            raise InvalidArgumentError("async_buffer_bytes must be at least 1024")
        _check_times(
            self, "commit_timeout", "synch_timeout", "initial_timeout", "detach_timeout",
            "keepalive_interval",
        )  # fmt: skip
        if self.detach_timeout and self.keepalive_interval >= self.detach_timeout:
            raise InvalidArgumentError(
                "keepalive_interval must be shorter than detach_timeout, or replicas that are "
                "merely idle would be detached"
            )


#: The callback type of `ReplicaParams.on_notification`: ``(notification, detail)``.
NotificationCallback = Callable[[Notification, str], None]


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    """One transaction as applied on a replica (passed to `ReplicaParams.on_transaction`).

    Attributes:
        txid: its transaction id.
        generation: the generation under which the master committed it.
        ops: its writes, ``[0, key, value]`` (put) or ``[1, key]`` (delete).
    """

    txid: int
    generation: int
    ops: list[Any]


@dataclass(frozen=True)
class ReplicaParams:
    """How a replica attaches. All times are seconds; 0 disables a timer.

    Attributes:
        mode: `ReplicaMode` flags.
        initial_timeout: how long the initial load may take.
        commit_timeout: how long sending an acknowledgement may block.
        wait_data_timeout: abort (`CONNECTION_ABORTED`) when the master is silent this long.
        cancel_address: where `ALLOW_CANCEL` opens the cancel point for `hakit.cancel`.
        on_notification: called with a `Notification` and a detail string.
        on_transaction: called with each applied `TransactionRecord`; if it raises, the
            replica stops with `ITERATOR_ERROR`.
        master_params: the `MasterParams` this node uses after a force master (default: the
            node's own, or the defaults).
    """

    mode: ReplicaMode = ReplicaMode.NONE
    initial_timeout: float = 60.0
    commit_timeout: float = 5.0
    wait_data_timeout: float = 5.0
    cancel_address: str | None = None
    on_notification: NotificationCallback | None = field(default=None, compare=False)
    on_transaction: Callable[[TransactionRecord], None] | None = field(default=None, compare=False)
    master_params: MasterParams | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.mode, ReplicaMode):
            raise InvalidArgumentError(f"mode must be ReplicaMode flags, got {self.mode!r}")
        _check_times(self, "initial_timeout", "commit_timeout", "wait_data_timeout")
        if ReplicaMode.ALLOW_CANCEL in self.mode and not self.cancel_address:
            raise InvalidArgumentError("ALLOW_CANCEL needs a cancel_address")


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What a commit achieved.

    Attributes:
        txid: the transaction's id.
        generation: the generation it was committed under.
        acked: the replicas that acknowledged it.
        detached: the replicas detached during the commit (they did not acknowledge in time).
        history: the id of the history it was written in (see `Node.history_id`).
    """

    txid: int
    generation: int
    acked: tuple[str, ...] = ()
    detached: tuple[str, ...] = ()
    history: str = ""


@dataclass(frozen=True, slots=True)
class DiscardedTransactions:
    """What a replica gave up when its history diverged from its master's (`Node.discarded`).

    As MongoDB keeps rollback data, the node keeps the transactions it discarded (those it
    still held in memory: all of them unless it restarted since writing them) and, always,
    the values the full load replaced.

    Attributes:
        time: the trio clock when the divergence was found.
        master: the master whose history replaced this node's.
        first_txid: the first discarded txid.
        last_txid: the last discarded txid.
        transactions: the discarded transactions this node still held, in txid order.
        replaced: ``(key, value)`` for every key the load changed or removed, with the value
            this node held before it.
    """

    time: float
    master: str
    first_txid: int
    last_txid: int
    transactions: tuple[TransactionRecord, ...]
    replaced: tuple[tuple[Any, Any], ...]


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """A replica that attached and finished its initial sync.

    Attributes:
        name: the replica's node name.
        sync: how it was synced: ``"equal"``, ``"incremental"`` or ``"full"``.
        txid: the txid it holds now.
    """

    name: str
    sync: str
    txid: int


def stop_reason_text(reason: StopReason, detail: str = "") -> str:
    """Return ``"NAME (value): explanation [detail]"`` for logs and the CLI."""
    text = f"{reason.name} ({int(reason)}): {reason.describe()}"
    return f"{text} [{detail}]" if detail else text


@dataclass(frozen=True)
class NodeLimits:
    """How much a node lets its peers take: connections, handlers, buffered bytes, time.

    They bound what a misbehaving or hostile peer can cost a node; a peer that passes one
    loses its own connection (recorded as a `ConnectionRefused` or `ChannelDisconnected`
    event), never the node or another peer's connection. All times are seconds.

    Attributes:
        max_connections: connections open at once on each listener, of every kind
            (replicas, channels, cancel requests, handshakes in progress); one more is
            closed as soon as it is accepted.
        max_channel_connections: incoming channel connections open at once on the node;
            one more is refused at its hello.
        max_handlers_per_connection: message handlers running at once for one incoming
            channel connection; while that many run, the connection is not read, so the
            requester waits (its requests time out) instead of the node queueing them.
        channel_idle_timeout: an incoming channel connection that sent no frame for this
            long, while none of its handlers runs, is closed; the requester reconnects on
            its next request.
        frame_timeout: a frame on an incoming channel connection must arrive whole within
            this long of its first byte.
        receive_budget: the bytes of unfinished frames all incoming channel connections
            may hold at once; the connection that would exceed it is closed.
    """

    max_connections: int = 1024
    max_channel_connections: int = 256
    max_handlers_per_connection: int = 1024
    channel_idle_timeout: float = 300.0
    frame_timeout: float = 30.0
    receive_budget: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in (
            "max_connections",
            "max_channel_connections",
            "max_handlers_per_connection",
            "receive_budget",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("channel_idle_timeout", "frame_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise InvalidArgumentError(f"{name} must be a number of seconds > 0, got {value!r}")
