"""Many nodes in one trio run, linked by a seeded simulated network (DESIGN 6)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from ..protocol import InvalidArgumentError
from ..protocol._auth import check_secret
from ..storage import Storage
from ..transports import SimulatedNetwork
from ._events import Event, EventLog
from ._node import Node
from ._params import NodeLimits
from ._statistics import NodeStatistics


@dataclass(frozen=True, slots=True)
class ClusterStatistics:
    """Every node's statistics at one moment.

    Attributes:
        nodes: each node's `NodeStatistics`, by name.
        events: how many events the cluster has logged.
    """

    nodes: dict[str, NodeStatistics]
    events: int


class Cluster:
    """Nodes that live in one trio run and talk over `mem:` addresses.

    Attributes:
        network: the simulated network (partition, heal, latency).
        events: the ordered log of every node's events.
        seed: the seed of the simulated network.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        seed: int,
        cluster_name: str,
        secret: bytes | str | None = None,
    ) -> None:
        self._nursery = nursery
        #: The cluster secret every node of the cluster proves on its links (None: none).
        self.secret = None if secret is None else check_secret(secret)
        self.seed = seed
        self.cluster_name = cluster_name
        self.network = SimulatedNetwork(seed)
        self.events = EventLog()
        self._nodes: dict[str, Node] = {}

    @property
    def nodes(self) -> dict[str, Node]:
        """The cluster's nodes by name."""
        return dict(self._nodes)

    def __getitem__(self, name: str) -> Node:
        return self._nodes[name]

    def _log(self, event: Event) -> None:
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
            await nursery.start(node._main)
            await node.listen(f"mem:{node.name}")
        except BaseException:
            if self._nodes.get(node.name) is node:
                del self._nodes[node.name]
            raise

    def statistics(self) -> ClusterStatistics:
        """Return every node's statistics."""
        return ClusterStatistics(
            {name: node.statistics() for name, node in self._nodes.items()}, len(self.events)
        )

    async def aclose(self) -> None:
        """Close every node."""
        for node in self._nodes.values():
            await node.aclose()


@asynccontextmanager
async def open_cluster(
    *, seed: int = 0, cluster_name: str = "hakit", secret: bytes | str | None = None
) -> AsyncIterator[Cluster]:
    """Run a cluster of in-kernel nodes inside the ``async with`` block.

    Args:
        seed: seeds the simulated network; same seed and script give the same event log
            (under trio's `MockClock`).
        cluster_name: the cluster name every node shares.
        secret: a cluster secret (at least 16 bytes) every node proves on every link, as
            nodes in separate processes do (see `open_node`).

    Raises:
        TypeError, ValueError: a bad `secret`.
    """
    cluster_secret = None if secret is None else check_secret(secret)
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, seed=seed, cluster_name=cluster_name, secret=cluster_secret)
        try:
            yield cluster
        finally:
            await cluster.aclose()
            nursery.cancel_scope.cancel()
