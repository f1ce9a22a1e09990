"""A node: one database and the roles it plays (standalone, master, replica).

The node is the trio shell around the sans-I/O machines of `hakit.protocol`: it moves bytes,
reads the clock, persists through its `Storage`, and runs its background tasks (listeners,
replica links) in its own nursery. Every decision about the protocol is made by the machines.
"""

from __future__ import annotations

import errno
import hashlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import trio
import trio.lowlevel

from ..protocol import (
    HAIOError,
    InvalidArgumentError,
    LocalProtocolError,
    NodeClosedError,
    RemoteProtocolError,
    ReplicationError,
    StopReason,
)
from ..protocol import _history as h
from ..protocol import _messages as m
from ..protocol._codec import DEFAULT_MAX_FRAME_SIZE, HANDSHAKE_LIMITS
from ..storage import DELETE, PUT, Key, MemoryStorage, Storage
from ..transports import FramedStream, SimulatedNetwork, open_listener, parse_address
from ._channels import Channel, ChannelManager, Handler, _Eid  # message channels (hook)
from ._events import (
    ConnectionRefused,
    Event,
    EventLog,
    EventSink,
    RoleChanged,
)
from ._master_side import MasterSide
from ._params import (
    CommitResult,
    DiscardedTransactions,
    MasterParams,
    NodeLimits,
    ReplicaInfo,
    ReplicaMode,
    ReplicaParams,
    Role,
    TransactionRecord,
)
from ._replica_side import ReplicaRun, Session
from ._security import Security, TlsConfig, accept_secure, warn_if_exposed
from ._statistics import LinkStatistics, NodeStatistics
from ._translog import TransLog
from ._unwrap import open_unwrapping_nursery

#: Transactions kept for resync by a node that is not (yet) a master, so that after a force
#: master the old master's other replicas can resync incrementally.
_REPLICA_LOG_LENGTH = 100_000
#: How long a new connection may take to send its first frame when no master params say.
_DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: After `accept` fails (out of file descriptors, say), the listener waits this long before
#: trying again, doubling up to the maximum while the failures go on.
_ACCEPT_BACKOFF_MIN = 0.01
_ACCEPT_BACKOFF_MAX = 1.0


class Transaction:
    """A write transaction; use it as ``async with node.transaction() as tx:``.

    Writes are buffered and committed atomically on exit; an exception inside the block
    rolls everything back. Reads see the transaction's own writes first. Outside its
    ``async with`` block a transaction refuses writes (they could never commit).
    """

    __slots__ = ("_node", "_ops", "_result", "_state", "_writes")

    def __init__(self, node: Node) -> None:
        self._node = node
        self._ops: list[list[Any]] = []
        self._writes: dict[Key, Any] = {}
        self._result: CommitResult | None = None
        self._state = "new"  # -> "open" in the block -> "ended"

    @property
    def result(self) -> CommitResult:
        """The `CommitResult` (txid, acknowledgements), once the block committed.

        Raises:
            LocalProtocolError: nothing was committed (yet): the block has not ended, it
                wrote nothing, or it raised and was rolled back.
        """
        if self._result is None:
            why = {
                "new": "it was never used as `async with node.transaction() as tx:`",
                "open": "its `async with` block has not ended yet",
                "ended": "it wrote nothing, or its block raised and was rolled back",
            }[self._state]
            raise LocalProtocolError(f"the transaction has no commit result: {why}")
        return self._result

    def _check_open(self) -> None:
        if self._state != "open":
            where = "before" if self._state == "new" else "after"
            raise LocalProtocolError(
                f"a write {where} the transaction's block would never be committed: "
                "write inside `async with node.transaction() as tx:`"
            )

    def put(self, key: Key, value: Any) -> None:
        """Set `key` to `value` (any msgpack-serializable value)."""
        self._check_open()
        _check_key(key)
        self._ops.append([PUT, key, value])
        self._writes[key] = value

    def delete(self, key: Key) -> None:
        """Remove `key` (a no-op if it does not exist)."""
        self._check_open()
        _check_key(key)
        self._ops.append([DELETE, key])
        self._writes[key] = _DELETED

    def get(self, key: Key, default: Any = None) -> Any:
        """Return the value of `key` as this transaction sees it."""
        value = self._writes.get(key, _MISSING)
        if value is _MISSING:
            return self._node.storage.get(key, default)
        return default if value is _DELETED else value

    async def __aenter__(self) -> Transaction:
        if self._state != "new":
            raise LocalProtocolError("a transaction is used once: start a new one")
        self._node._require_running()
        self._node._master.check_writable()
        self._state = "open"
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None and self._ops:
                self._result = await self._node._master.commit(self._ops)
        finally:
            self._state = "ended"

    def __enter__(self) -> None:
        raise TypeError("a transaction commits asynchronously: use `async with`, not `with`")

    def __exit__(self, *exc_info: object) -> None:  # pragma: no cover - __enter__ raises
        pass


_MISSING = object()
_DELETED = object()


def _discarded_from_record(record: dict[str, Any]) -> DiscardedTransactions:
    return DiscardedTransactions(
        time=record["time"],
        master=record["master"],
        first_txid=record["first_txid"],
        last_txid=record["last_txid"],
        transactions=tuple(TransactionRecord(*entry) for entry in record["transactions"]),
        replaced=tuple((key, value) for key, value in record["replaced"]),
    )


def _check_key(key: object) -> None:
    if not isinstance(key, str | bytes):
        raise InvalidArgumentError(f"keys must be str or bytes, got {type(key).__name__}")


class Node:
    """One database and its replication roles. Create with `open_node` or `Cluster.add_node`.

    Attributes:
        name: the node's name, unique in its cluster.
        storage: the node's database.
        cluster_name: replicas and masters must share it.
        events: the node's own event log.
        limits: what its peers may cost it (`NodeLimits`).
    """

    def __init__(
        self,
        name: str,
        *,
        storage: Storage | None = None,
        cluster_name: str = "hakit",
        network: SimulatedNetwork | None = None,
        event_sink: EventSink | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        limits: NodeLimits | None = None,
        secret: bytes | str | None = None,
        tls: TlsConfig | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError("a node needs a non-empty name")
        #: The cluster secret and TLS contexts every link of this node uses.
        self._security = Security.make(secret, tls)
        self._warned_exposed = False
        self.name = name
        self.storage: Storage = storage if storage is not None else MemoryStorage()
        self.cluster_name = cluster_name
        self.events = EventLog(event_sink)
        self.max_frame_size = max_frame_size
        limits = NodeLimits() if limits is None else limits
        if not isinstance(limits, NodeLimits):
            raise InvalidArgumentError(f"expected NodeLimits, got {type(limits).__name__}")
        self.limits = limits
        self._network = network
        self._address: str | None = None
        self._role = Role.STANDALONE
        self._nursery: trio.Nursery | None = None
        self._closed = False
        self._crashed = False  # Cluster.crash: died like a killed process
        self._listeners: dict[str, trio.CancelScope] = {}
        # Recent transactions for incremental resync, packed as they travel (a decoded
        # entry would be three lists for the garbage collector to track while it is kept).
        self._log = TransLog(_REPLICA_LOG_LENGTH)
        self._role_changed = trio.Event()
        self._master = MasterSide(self)
        # replica state
        self._session: Session | None = None
        self._last_session: Session | None = None
        self._channels = ChannelManager(self)  # message channels (hook)
        # statistics
        self._applied = 0
        self._refused = 0

    # -- identity and state --------------------------------------------------------------------
    @property
    def address(self) -> str | None:
        """Where this node listens (replicas attach and channels connect here), if anywhere."""
        return self._address

    @property
    def role(self) -> Role:
        """The node's current role."""
        return self._role

    @property
    def txid(self) -> int:
        """The id of the last transaction this node holds (0: empty)."""
        return self.storage.txid

    @property
    def generation(self) -> int:
        """The node's generation (fencing counter, raised at every promotion)."""
        return self.storage.generation

    @property
    def history_id(self) -> str:
        """The id of the history this node's next transaction belongs to (``""``: none yet).

        Every promotion mints a new random id, so two nodes promoted separately never share
        one even when their generations are equal: two nodes with the same `history_id` and
        txid hold the same transactions.
        """
        return h.current_id(self.storage.history)

    def discarded(self) -> list[DiscardedTransactions]:
        """Return what this node discarded when its history diverged from its master's.

        Kept by the storage (on a `SqliteStorage`, in its file), oldest first.
        """
        return [_discarded_from_record(record) for record in self.storage.discarded()]

    def _new_history_id(self) -> str:
        if self._network is not None:
            # On the simulated network runs replay exactly: the id is drawn from the seed and
            # from everything that makes this promotion unlike any other.
            seed = f"{self._network.seed}/{self.name}/{self.generation}/{self.txid}"
            digest = hashlib.sha256(f"{seed}/{self.storage.history}".encode()).hexdigest()
            return digest[:16]
        return secrets.token_hex(8)

    @property
    def master_params(self) -> MasterParams | None:
        """The master parameters in force, if this node is or was set up as a master."""
        return self._master.params

    @property
    def replicas(self) -> list[str]:
        """The names of the replicas attached to this master."""
        return list(self._master.links)

    def get(self, key: Key, default: Any = None) -> Any:
        """Return the committed value of `key`, or `default` (works in every role)."""
        return self.storage.get(key, default)

    def items(self) -> list[tuple[Key, Any]]:
        """Return every committed ``(key, value)`` pair."""
        return list(self.storage.items())

    def transaction(self) -> Transaction:
        """Start a write transaction: ``async with node.transaction() as tx: tx.put(k, v)``.

        Raises:
            NotMasterError: this node is a replica, or stepped down after a force master.
        """
        return Transaction(self)

    def __repr__(self) -> str:
        return (
            f"<hakit.Node {self.name!r} {self._role.value} gen={self.generation} "
            f"txid={self.txid} address={self._address!r}>"
        )

    # -- lifecycle -----------------------------------------------------------------------------
    async def _main(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._closed = True
            self._nursery = None
            self._master.fail_all_pending(NodeClosedError(f"node {self.name!r} was closed"))
            self.storage.close()

    def _spawn(self) -> trio.Nursery:
        self._require_running()
        assert self._nursery is not None
        return self._nursery

    def _require_running(self) -> None:
        if self._nursery is None:
            if self._closed:
                raise NodeClosedError(f"node {self.name!r} is closed")
            raise NodeClosedError(
                f"node {self.name!r} is not running: "
                "start it with hakit.open_node() or cluster.add_node()"
            )

    async def aclose(self) -> None:
        """Stop every role and background task of this node and close its storage."""
        if self._nursery is not None:
            self._master.close()
            if self._session is not None:
                self._session.interrupt(StopReason.CANCELLED, "the node is closing")
            self._nursery.cancel_scope.cancel()
        await trio.lowlevel.checkpoint()

    def _crash(self) -> None:
        """Die at once, like a killed process: no goodbyes (the network cuts us next)."""
        self._crashed = True
        if self._session is not None:
            self._session.interrupt(StopReason.CONNECTION_ABORTED, "the node crashed")
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        self._role_changed.set()  # wakes serve_replicas / attach_replica, which then raise

    def _check_alive(self) -> None:
        if self._crashed:
            raise NodeClosedError(f"node {self.name!r} crashed")

    async def listen(self, address: str) -> str:
        """Listen on `address` for replicas, channels and cancel requests.

        Returns:
            The bound address (with the real port for ``"host:0"``). The first address a node
            listens on becomes `node.address`.
        """
        nursery = self._spawn()
        if address in self._listeners or address == self._address:
            return self._address if address == self._address and self._address else address
        listener, bound = await open_listener(
            address, network=self._network, ssl_context=self._security.server_ssl
        )
        if not self._warned_exposed:
            self._warned_exposed = warn_if_exposed(self.name, bound, self._security)
        scope = trio.CancelScope()
        self._listeners[bound] = scope
        if self._address is None:
            self._address = bound
        nursery.start_soon(self._accept_loop, listener, scope, bound)
        return bound

    async def _accept_loop(
        self, listener: trio.abc.Listener[trio.abc.Stream], scope: trio.CancelScope, bound: str
    ) -> None:
        open_now = 0
        limit = self.limits.max_connections

        async def handle(stream: trio.abc.Stream) -> None:
            nonlocal open_now
            try:
                await self._handle_incoming(stream)
            finally:
                open_now -= 1

        try:
            with scope:
                async with listener:
                    backoff = _ACCEPT_BACKOFF_MIN
                    while True:
                        try:
                            stream = await listener.accept()
                        except OSError as exc:
                            # Out of descriptors or buffers (EMFILE, ENFILE, ENOBUFS, ENOMEM)
                            # or any other failure of one accept: the listener itself is
                            # fine, and so are the connections open; wait, then go on.
                            name = errno.errorcode.get(exc.errno or 0, "error")
                            self._refuse("unknown peer", f"accept failed ({name}): {exc}")
                            await trio.sleep(backoff)
                            backoff = min(backoff * 2, _ACCEPT_BACKOFF_MAX)
                            continue
                        backoff = _ACCEPT_BACKOFF_MIN
                        if open_now >= limit:
                            self._refuse(
                                "unknown peer",
                                f"too many connections on {bound} (limit {limit}, "
                                "NodeLimits.max_connections)",
                            )
                            with trio.CancelScope(shield=True):
                                await stream.aclose()
                            continue
                        open_now += 1
                        try:
                            self._spawn().start_soon(handle, stream)
                        except BaseException:
                            open_now -= 1
                            with trio.CancelScope(shield=True):
                                await stream.aclose()
                            raise
        finally:
            self._listeners.pop(bound, None)

    def _stop_listener(self, address: str) -> None:
        scope = self._listeners.get(address)
        if scope is not None:
            scope.cancel()

    def _record(self, event: Event) -> None:
        if not self._crashed:  # a dead process logs nothing
            self.events.append(event)

    def _now(self) -> float:
        return trio.current_time()

    def _set_role(self, role: Role) -> None:
        if role is not self._role:
            old, self._role = self._role, role
            self._record(
                RoleChanged(
                    self._now(),
                    self.name,
                    old.value,
                    role.value,
                    self.generation,
                    self.history_id,
                )
            )
        self._role_changed.set()
        self._role_changed = trio.Event()

    # -- incoming connections ------------------------------------------------------------------
    async def _handle_incoming(self, stream: trio.abc.Stream) -> None:
        # Small limits until the peer says what it is: a handshake is a few scalars.
        framed = FramedStream(stream, max_frame_size=self.max_frame_size, limits=HANDSHAKE_LIMITS)
        params = self._master.params
        timeout = params.initial_timeout if params and params.initial_timeout else None
        try:
            with trio.fail_after(timeout or _DEFAULT_HANDSHAKE_TIMEOUT):
                # TLS and the cluster secret first: a refused peer gets no protocol frame.
                values, refused = await accept_secure(framed, self._security)
            if refused is not None:
                self._refuse("unauthenticated peer", refused)
                with trio.CancelScope(shield=True):
                    await framed.aclose()
                return
            if len(values) != 1:
                raise RemoteProtocolError("sent more before the handshake was answered")
            msg = m.parse_message(values[0])
        except (RemoteProtocolError, EOFError, OSError, trio.BrokenResourceError,
                trio.TooSlowError) as exc:  # fmt: skip
            if isinstance(exc, trio.TooSlowError):
                detail = "no handshake in time"
            else:  # a failed TLS handshake says why only in its cause
                detail = str(exc) or str(exc.__cause__ or type(exc).__name__)
            self._refuse("unknown peer", detail)
            with trio.CancelScope(shield=True):
                await framed.aclose()
            return
        if isinstance(msg, m.Hello):
            await self._master.serve_replica(framed, msg)
        elif isinstance(msg, m.Cancel):
            await self._serve_cancel(framed, msg)
        elif isinstance(msg, m.ChannelHello):  # message channels (hook)
            await self._channels.serve(framed, msg)
        else:
            self._refuse("unknown peer", f"unexpected first message {type(msg).__name__}")
            await framed.aclose()

    def _refuse(self, peer: str, detail: str) -> None:
        self._refused += 1
        self._record(ConnectionRefused(self._now(), self.name, peer, detail))

    async def _send_and_close(self, framed: FramedStream, data: bytes) -> None:
        with trio.move_on_after(1.0):
            with suppress(OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                await framed.send(data)
        with trio.CancelScope(shield=True):
            await framed.aclose()

    # -- master side (implemented in _master_side.py) -------------------------------------------
    def set_master_params(self, params: MasterParams | None = None, *, force: bool = False) -> None:
        """Make this node a master with `params` (or update them).

        Becoming a master raises the generation by one (DESIGN 4.5) and mints a new history id
        (`history_id`), so that every history is named by the master that wrote it.

        Args:
            params: the master parameters (default: `MasterParams()`).
            force: promote even a node that stepped down for a newer master and has not
                resynced from it since: the newer master's acknowledged transactions that this
                node lacks are then lost (its replicas discard them, see `discarded`).

        Raises:
            LocalProtocolError: the node is attached as a replica, or it stepped down for a
                newer master and has not resynced from it since (promoting it could lose the
                newer master's acknowledged transactions).
            InvalidArgumentError: `params` is not a `MasterParams`.
        """
        params = MasterParams() if params is None else params
        if not isinstance(params, MasterParams):
            raise InvalidArgumentError(f"expected MasterParams, got {type(params).__name__}")
        if self._role is Role.REPLICA:
            raise LocalProtocolError(
                f"node {self.name!r} is attached as a replica; stop it before making it a master"
            )
        self._master.set_params(params, force=force)

    def _resize_log(self, length: int) -> None:
        self._log.resize(length)

    async def attach_replica(
        self, address: str | None = None, *, timeout: float = 60.0
    ) -> ReplicaInfo:
        """Wait for one replica to connect and finish its initial sync.

        Args:
            address: where to listen (default: the node's own address). Listening starts if
                needed and goes on after the call, so other replicas may attach too.
            timeout: seconds to wait.

        Returns:
            The replica that attached.

        Raises:
            NetworkTimeoutError: no replica attached within `timeout`.
            KilledByReplicaError: a replica took over as the master (force master).
            LocalProtocolError: this node is not a master (call `set_master_params` first).
        """
        return await self._master.attach_replica(address, timeout)

    async def serve_replicas(
        self,
        address: str | None = None,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve any number of replicas on `address` until cancelled or stepped down.

        Use ``bound = await nursery.start(node.serve_replicas, "127.0.0.1:0")`` to learn the
        bound address; `node.address` reports it from then on (if it had none).

        Raises:
            KilledByReplicaError: a replica took over as the master.
        """
        await self._master.serve_replicas(address, task_status)

    def detach_replica(self, name: str) -> None:
        """Detach one replica; its `attach_master` returns `MASTER_REQUESTED_DISCONNECT`.

        Raises:
            InvalidArgumentError: no replica of that name is attached.
        """
        self._master.detach_replica(name)

    def detach_all_replicas(self) -> None:
        """Detach every attached replica."""
        self._master.detach_all_replicas()

    def stop_master(self) -> None:
        """Detach every replica, stop serving replication and become `STANDALONE`."""
        self._master.stop_master()

    # -- replica side --------------------------------------------------------------------------
    async def attach_master(
        self,
        connection_string: str,
        params: ReplicaParams | None = None,
        *,
        timeout: float = 10.0,
        task_status: trio.TaskStatus[ReplicaInfo] = trio.TASK_STATUS_IGNORED,
    ) -> StopReason:
        """Attach to the master at `connection_string` and replicate until stopped.

        Connects, handshakes, loads the master's state (none if equal, the missed
        transactions if possible, else a full snapshot), then applies the master's
        transaction stream. If the master is replaced by force master, the replica follows
        the new master without returning (a `MasterChanged` event records it).

        A master that is not there yet (nothing listens, or the node there is not a master
        yet) is waited for up to `timeout`, trying again with backoff. Started with
        ``info = await nursery.start(node.attach_master, address)``, the call returns to
        the caller once the initial sync is done, with the `ReplicaInfo` the master's
        `attach_replica` reports too, and goes on replicating in the nursery. If a stop was
        requested (`replica_stop`, `cancel`) and the previous attach is still winding down,
        this call waits for it to end first.

        Returns:
            Why replication stopped, once the replica had attached.

        Raises:
            NetworkTimeoutError: no master was reached, or it did not answer, in `timeout`.
            HAProtocolError: the master refused the handshake (`HANDSHAKE_FAILED`).
            HAIOError: under ``nursery.start``, replication stopped before the initial sync
                was done.
            Each carries ``.stop_reason``.
        """
        params = ReplicaParams() if params is None else params
        if not isinstance(params, ReplicaParams):
            raise InvalidArgumentError(f"expected ReplicaParams, got {type(params).__name__}")
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidArgumentError(
                f"timeout must be a positive number of seconds, got {timeout!r}"
            )
        parse_address(connection_string)  # a malformed string fails here, with ValueError
        if self._role is Role.MASTER:
            raise LocalProtocolError(
                f"node {self.name!r} is a master; "
                "call stop_master() before attaching it as a replica"
            )
        previous = self._session
        if previous is not None and previous.request is not None:
            # replica_stop() or cancel() was called and the attach is ending: wait for it.
            await previous.ended.wait()
        if self._session is not None:
            raise LocalProtocolError(f"node {self.name!r} is already attached to a master")
        self._spawn()  # a node that is not running cannot replicate
        session = Session()
        self._session = session
        self._last_session = session
        status = None if task_status is trio.TASK_STATUS_IGNORED else task_status
        run = ReplicaRun(self, session, params, status)
        try:
            if ReplicaMode.ALLOW_CANCEL in params.mode:
                assert params.cancel_address is not None
                await self.listen(params.cancel_address)
            try:
                reason = await run.replicate(connection_string, timeout)
            except ReplicationError:
                self._check_alive()  # a crash, not the link, ended it
                raise
            self._check_alive()
            session.stop_reason = reason
        except ReplicationError as exc:
            session.stop_reason = exc.stop_reason
            raise
        finally:
            self._session = None
            if params.cancel_address and params.cancel_address != self._address:
                self._stop_listener(params.cancel_address)
            if self._role is Role.REPLICA:
                self._set_role(Role.STANDALONE)
            session.ended.set()
        if not run.started:
            # nursery.start() waits for the initial sync; a stop before it is an error there.
            raise HAIOError(
                f"replication stopped before the initial sync was done: {reason.name}",
                stop_reason=reason, address=connection_string,
            )  # fmt: skip
        return reason

    async def wait_stopped(self) -> StopReason | None:
        """Wait until this node's `attach_master` call has ended (at once if none runs).

        ``node.replica_stop()`` and ``node.cancel()`` only ask the attach to stop; after
        ``await node.wait_stopped()`` it has, and the node can attach again or become a
        master.

        Returns:
            Why the last attach stopped (the reason it returned, or the ``stop_reason`` of
            the error it raised); None if this node never attached.
        """
        session = self._session
        if session is not None:
            await session.ended.wait()
        else:
            await trio.lowlevel.checkpoint()
        last = self._last_session
        return last.stop_reason if last is not None else None

    def replica_stop(self) -> None:
        """Stop replicating gracefully; `attach_master` returns `STOPPED_BY_LOCAL_REQUEST`.

        The transaction in hand is finished and the master is told before the link closes.

        Raises:
            LocalProtocolError: the node is not attached to a master.
        """
        if self._session is None:
            raise LocalProtocolError(f"node {self.name!r} is not attached to a master")
        self._session.interrupt(StopReason.STOPPED_BY_LOCAL_REQUEST, "replica_stop() was called")

    def cancel(self) -> None:
        """Interrupt replication at once; `attach_master` returns `CANCELLED`.

        Raises:
            LocalProtocolError: the node is not attached to a master.
        """
        if self._session is None:
            raise LocalProtocolError(f"node {self.name!r} is not attached to a master")
        self._session.interrupt(StopReason.CANCELLED, "cancel() was called")

    async def _serve_cancel(self, framed: FramedStream, msg: m.Cancel) -> None:
        session = self._session
        reply: m.Message
        if session is None or (msg.node and msg.node != self.name):
            detail = f"node {self.name!r} has no replication to cancel"
            self._refuse("cancel request", detail)
            reply = m.Reject(self.generation, int(StopReason.CANCELLED), detail)
        else:
            session.interrupt(StopReason.CANCELLED, "a cancel request came to the cancel point")
            reply = m.Bye(self.generation, int(StopReason.CANCELLED), "cancelled")
        await self._send_and_close(framed, reply.encode())

    # -- peers (used by message channels) ------------------------------------------------------
    def _resolve_peer(self, name: str) -> str | None:
        """Return the address of the node called `name`, if this node knows it.

        Known peers: the node itself, cluster members (``mem:<name>``), attached replicas
        (the address they announced) and the master this replica follows.
        """
        if name == self.name:
            return self._address
        if self._network is not None and self._network.is_listening(name):
            return f"mem:{name}"
        link = self._master.links.get(name)
        if link is not None and link.address:
            return link.address
        session = self._session
        if session is not None and session.master == name:
            return session.master_address
        return None

    def _current_master(self) -> str | None:
        """Return the current master's address: ``""`` for this node itself, None if unknown."""
        if self._role is Role.MASTER:
            return ""
        session = self._session
        if session is not None and session.master_address is not None:
            return session.master_address
        return self._master.master_hint

    # -- message channels (hook: implemented in _channels.py) --------------------------------
    def set_msg_dispatch(self, handler: Handler | None) -> None:
        """Set the handler of the messages other nodes send this node (None removes it).

        Each message runs ``await handler(msg)`` in a task of its own in the node's nursery;
        ``msg`` is a `hakit.ChannelMessage` (``parts``, ``sender``, ``need_response``,
        ``await msg.respond(*parts)``). A request arriving with no handler fails with
        `NoServerError`; a one-way message is dropped. If the handler raises, the requester
        gets `RemoteHandlerError` and the node carries on.

        Raises:
            InvalidArgumentError: `handler` is not an async function.
        """
        self._channels.set_dispatch(handler)

    def channel(self, target: str | _Eid) -> Channel:
        """Return a channel for messages and requests to `target`.

        Args:
            target: a node name, an address (``"host:port"``, a unix path, ``"mem:name"``),
                or `hakit.EID_MASTER` for whichever node is the master at each send (this
                node's own handler when it is the master).

        Raises:
            InvalidArgumentError: `target` is neither a known node nor an address.
        """
        return self._channels.channel(target)

    # -- statistics ----------------------------------------------------------------------------
    def statistics(self) -> NodeStatistics:
        """Return a snapshot of this node's counters and links."""
        links = tuple(
            LinkStatistics(
                replica=link.name,
                state=link.machine.state.value,
                sync=link.sync.name.lower(),
                acked_txid=link.machine.acked,
                lag=self.txid - link.machine.acked,
                unsent_bytes=link.unsent_bytes,
                bytes_sent=link.bytes_sent,
                load_progress=link.load_progress,
            )
            for link in self._master.links.values()
        )
        session = self._session
        return NodeStatistics(
            name=self.name,
            role=self._role.value,
            address=self._address,
            generation=self.generation,
            txid=self.txid,
            keys=len(self.storage),
            commits=self._master.commits,
            commit_failures=self._master.commit_failures,
            applied=self._applied,
            refused_connections=self._refused,
            replicas=links,
            master=session.master if session else None,
            writes_disabled=self._master.writes_disabled,
            channels=self._channels.statistics(),  # message channels (hook)
        )


@asynccontextmanager
async def open_node(
    name: str,
    *,
    address: str | None = None,
    storage: Storage | None = None,
    cluster_name: str = "hakit",
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    limits: NodeLimits | None = None,
    secret: bytes | str | None = None,
    tls: TlsConfig | None = None,
) -> AsyncIterator[Node]:
    """Run one standalone node; its background tasks live inside the ``async with`` block.

    An exception raised in the block comes out as itself (not in an `ExceptionGroup`).

    Args:
        name: the node's name.
        address: where to listen (``"host:port"``, a unix path); ``"127.0.0.1:0"`` picks a
            free port, reported by `node.address`.
        storage: the database (default: a new `MemoryStorage`).
        cluster_name: replicas and masters must share it.
        max_frame_size: the largest frame accepted from a peer.
        limits: what its peers may cost it: connections, handlers, buffered bytes, idle
            time (default: `NodeLimits()`).
        secret: the cluster secret (bytes or str, at least 16 bytes): every link this node
            opens or accepts proves it by mutual challenge-response; peers without it are
            refused before they see any data. None: no authentication (a node listening
            beyond loopback then warns).
        tls: TLS contexts for the node's TCP links (see `hakit.TlsConfig`).

    Raises:
        TypeError, ValueError: a bad `secret` (too short, not bytes or str) or `tls`.
    """
    node = Node(
        name,
        storage=storage,
        cluster_name=cluster_name,
        max_frame_size=max_frame_size,
        limits=limits,
        secret=secret,
        tls=tls,
    )
    async with open_unwrapping_nursery() as nursery:  # the user's error comes out as itself
        await nursery.start(node._main)
        try:
            if address is not None:
                await node.listen(address)
            yield node
        finally:
            await node.aclose()
