"""Many nodes in one trio run, linked by a seeded simulated network (DESIGN 6)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import trio

from ..protocol import InvalidArgumentError
from ..protocol._auth import check_secret
from ..storage import MemoryStorage, SqliteStorage, Storage
from ..transports import SimulatedNetwork
from ..transports._memory import Route
from ._decode import frame_kind
from ._events import (
    Event,
    EventLog,
    MessageEvent,
    MessageRecord,
    NetworkChanged,
    NodeCrashed,
    NodeRestarted,
)
from ._node import Node
from ._params import NodeLimits
from ._statistics import NodeStatistics
from ._unwrap import open_unwrapping_nursery


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


@dataclass(frozen=True, slots=True)
class ClusterStatistics:
    """Every node's statistics at one moment.

    Attributes:
        nodes: each node's `NodeStatistics`, by name.
        events: how many events the cluster's log holds.
    """

    nodes: dict[str, NodeStatistics]
    events: int


class _Tracer:
    """Turns what the simulated network reports into the cluster's `MessageEvent` records."""

    __slots__ = ("_last_frame", "_last_kind", "log", "watchers")

    def __init__(self, log: EventLog) -> None:
        self.log = log
        # The kind of the frame last named: the same frame is often named twice in a row
        # (its "sent", then its "delivered"; one commit's frame to each replica in turn), so
        # it is decoded once. Looked at inline where a frame is named: once per frame.
        self._last_frame: bytes | None = None
        self._last_kind = ""
        #: Called with every delivered message (the notebook's step-by-step clock).
        self.watchers: list[Callable[[MessageEvent], None]] = []

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
        if frame is None:
            kind, size, frame = signal, 0, b""
        else:
            if frame is not self._last_frame:  # the memo: see __init__
                self._last_frame, self._last_kind = frame, frame_kind(frame)
            kind, size = self._last_kind, len(frame) + 4
        sender = route.sender
        place = sender if action == "sent" or action == "held" else route.receiver
        # A plain tuple (see MessageRecord): the log builds the MessageEvent when it is read.
        record = (time, place or "?", action, sender, route.receiver, route.link, route.outbound,
                  seq, kind, size, sent, due, retransmits, detail, frame)  # fmt: skip
        self.log.append_message(record)
        if action == "delivered" and self.watchers:
            self._tell_watchers(record)

    def _tell_watchers(self, delivered: MessageRecord) -> None:
        event = MessageEvent(*delivered)
        for watcher in list(self.watchers):
            watcher(event)

    def passed(self, time: float, route: Route, seq: int, frames: tuple[bytes, ...]) -> None:
        """Frames sent and delivered at once (`time`): a "sent" and a "delivered" each."""
        sender, receiver, link, outbound = route.sender, route.receiver, route.link, route.outbound
        append = self.log.append_passed
        for frame in frames:
            if frame is not self._last_frame:  # the memo: see __init__
                self._last_frame, self._last_kind = frame, frame_kind(frame)
            kind, size = self._last_kind, len(frame) + 4
            delivered = (time, receiver or "?", "delivered", sender, receiver, link, outbound,
                         seq, kind, size, time, None, 0, "", frame)  # fmt: skip
            append((time, sender or "?", "sent", sender, receiver, link, outbound,
                    seq, kind, size, time, time, 0, "", frame), delivered)  # fmt: skip
            if self.watchers:
                self._tell_watchers(delivered)
            seq += 1

    def fault(self, time: float, action: str, detail: str) -> None:
        self.log.append(NetworkChanged(time, "network", action, detail))


class Cluster:
    """Nodes that live in one trio run and talk over `mem:` addresses.

    Attributes:
        network: the simulated network (partition, heal, hold, latency, loss).
        events: the ordered log of every node's events and every message on the network.
        seed: the seed of the simulated network.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        seed: int,
        cluster_name: str,
        secret: bytes | str | None = None,
        latency: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        self._nursery = nursery
        #: The cluster secret every node of the cluster proves on its links (None: none).
        self.secret = None if secret is None else check_secret(secret)
        self.seed = seed
        self.cluster_name = cluster_name
        self.events = EventLog(meta={"seed": seed, "cluster": cluster_name}, canonical=True)
        self._tracer = _Tracer(self.events)
        self.network = SimulatedNetwork(seed, latency=latency, tracer=self._tracer)
        self.events._refresh = self._refresh
        self._nodes: dict[str, Node] = {}
        self._stopped: dict[str, trio.Event] = {}

    @property
    def nodes(self) -> dict[str, Node]:
        """The cluster's nodes by name (a restarted node is its new `Node`)."""
        return dict(self._nodes)

    def __getitem__(self, name: str) -> Node:
        return self._nodes[name]

    def _refresh(self) -> None:
        # Read outside the trio run, the log is as of the last activity.
        with suppress(RuntimeError):
            self.network.advance()

    def __repr__(self) -> str:
        nodes = ", ".join(
            f"{name} ({node.role.value}, txid {node.txid})" for name, node in self._nodes.items()
        )
        return (
            f"<hakit.Cluster {self.cluster_name!r} seed={self.seed}: "
            f"{_count(len(self._nodes), 'node')}{': ' + nodes if nodes else ''}; "
            f"{_count(len(self.events), 'event')}>"
        )

    def _log(self, event: Event) -> None:
        self.network.advance()  # deliveries due before this event are logged before it
        self.events.append(event)

    async def add_node(
        self, name: str, *, storage: Storage | None = None, limits: NodeLimits | None = None
    ) -> Node:
        """Start a node named `name`, listening at ``"mem:<name>"``.

        Args:
            name: the node's name, unique in the cluster.
            storage: its database (default: a new `MemoryStorage`).
            limits: what its peers may cost it (default: `NodeLimits()`).

        Raises:
            InvalidArgumentError: the name is empty or taken.
        """
        node = self._new_node(name, storage=storage, limits=limits)
        await self._start_node(node, self._nursery)
        return node

    # The two halves of add_node, for hakit.jupyter: a notebook cell gets the node object at
    # once (sync) and its tasks are started in whichever nursery the live cluster keeps.
    def _new_node(
        self, name: str, *, storage: Storage | None = None, limits: NodeLimits | None = None
    ) -> Node:
        if name in self._nodes:
            raise InvalidArgumentError(f"the cluster already has a node named {name!r}")
        node = Node(
            name,
            storage=storage,
            cluster_name=self.cluster_name,
            network=self.network,
            event_sink=self._log,
            limits=limits,
            secret=self.secret,
        )
        self._nodes[name] = node
        return node

    async def _start_node(self, node: Node, nursery: trio.Nursery) -> None:
        try:
            stopped = trio.Event()
            self._stopped[node.name] = stopped
            await nursery.start(self._run_node, node, stopped)
            await node.listen(f"mem:{node.name}")
        except BaseException:
            if self._nodes.get(node.name) is node:
                del self._nodes[node.name]
            raise

    async def _run_node(
        self,
        node: Node,
        stopped: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await node._main(task_status=task_status)
        except Exception:
            # A crashed node's tasks die wherever they were, and may fail on the way; the
            # crash is the story (NodeCrashed), and the rest of the cluster runs on.
            if not node._crashed:
                raise
        finally:
            stopped.set()

    def _node(self, name: str) -> Node:
        node = self._nodes.get(name)
        if node is None:
            raise InvalidArgumentError(f"the cluster has no node named {name!r}")
        return node

    async def crash(self, name: str) -> None:
        """Kill node `name` as a process dies (``kill -9``): no goodbyes, nothing flushed.

        Its connections end as the kernel ends a dead process's sockets (see
        `SimulatedNetwork.crash`): peers read end of stream, or a reset where it had unread
        data, and see the stop reason their own side gives a lost link. Its tasks stop at
        once; a pending commit there fails with `NodeClosedError` (it may or may not have
        reached the replicas, as after a real crash), and so does its `attach_master` call.
        Its storage is closed as the process left it.

        Raises:
            InvalidArgumentError: no such node, or it has already crashed.
        """
        node = self._node(name)
        if self.network.is_down(name):
            raise InvalidArgumentError(f"node {name!r} has already crashed")
        self._log(NodeCrashed(trio.current_time(), name, node.role.value, node.txid))
        # Cancel its tasks first, so that none of its code runs on after the network has
        # cut it (a woken read would see a closed stream); then nothing of it goes out.
        node._crash()
        self.network.crash(name)
        await self._stopped[name].wait()

    async def restart(self, name: str, *, storage: Storage | None = None) -> Node:
        """Bring a crashed node back as a new process on its storage, standalone.

        A `SqliteStorage` is reopened on its file and keeps what was committed; a
        `MemoryStorage` died with the process, so the node comes back empty. The new node
        listens at ``"mem:<name>"`` again, with the same limits; making it a master or a
        replica again is up to the script, as after a real restart.

        Args:
            name: the crashed node.
            storage: the storage to come back on (default: as described above; required
                for other storage classes).

        Returns:
            The new `Node` (``cluster[name]`` from now on).

        Raises:
            InvalidArgumentError: no such node, or it has not crashed.
        """
        old = self._node(name)
        if not self.network.is_down(name):
            raise InvalidArgumentError(f"node {name!r} is running: crash it first")
        kept = "kept"
        if storage is None:
            if isinstance(old.storage, SqliteStorage):
                storage = SqliteStorage(old.storage.path)
            elif isinstance(old.storage, MemoryStorage):
                storage, kept = MemoryStorage(), "empty"
            else:
                raise InvalidArgumentError(
                    f"restart({name!r}) cannot reopen a {type(old.storage).__name__}: pass storage="
                )
        self.network.revive(name)
        del self._nodes[name]
        node = self._new_node(name, storage=storage, limits=old.limits)
        await self._start_node(node, self._nursery)
        self._log(NodeRestarted(trio.current_time(), name, kept, node.txid, node.generation))
        return node

    def statistics(self) -> ClusterStatistics:
        """Return every node's statistics."""
        return ClusterStatistics(
            {name: node.statistics() for name, node in self._nodes.items()}, len(self.events)
        )

    async def aclose(self) -> None:
        """Close every node."""
        for node in self._nodes.values():
            await node.aclose()
        self.events.flush()


@asynccontextmanager
async def open_cluster(
    *,
    seed: int = 0,
    cluster_name: str = "hakit",
    secret: bytes | str | None = None,
    latency: tuple[float, float] = (0.0, 0.0),
) -> AsyncIterator[Cluster]:
    """Run a cluster of in-kernel nodes inside the ``async with`` block.

    An exception raised in the block comes out as itself (not in an `ExceptionGroup`).

    Args:
        seed: seeds the simulated network; same seed and script give the same event log
            (under trio's `MockClock`), as long as messages take time: give the links a
            latency with some jitter, so that no two deliveries fall on the same instant.
        cluster_name: the cluster name every node shares.
        secret: a cluster secret (at least 16 bytes) every node proves on every link, as
            nodes in separate processes do (see `open_node`).
        latency: the default ``(mean, jitter)`` of every link, in seconds (see
            `SimulatedNetwork.set_latency`).

    Raises:
        TypeError, ValueError: a bad `secret`.
    """
    cluster_secret = None if secret is None else check_secret(secret)
    async with open_unwrapping_nursery() as nursery:  # the user's error comes out as itself
        cluster = Cluster(
            nursery, seed=seed, cluster_name=cluster_name, secret=cluster_secret, latency=latency
        )
        try:
            yield cluster
        finally:
            await cluster.aclose()
            nursery.cancel_scope.cancel()
