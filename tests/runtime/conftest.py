"""Fixtures for runtime tests: the same scenarios on the mem: network and on real TCP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

import hakit


@pytest.fixture(params=["mem", "tcp"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock(transport: str) -> trio.testing.MockClock:
    # Virtual time. On mem: the clock jumps as soon as every task waits. With real sockets
    # it must first give the kernel a moment to deliver loopback bytes, or it would jump
    # past a timeout while a reply is already on its way.
    threshold = 0.0 if transport == "mem" else 0.05
    return trio.testing.MockClock(autojump_threshold=threshold)


@dataclass
class Nodes:
    """Makes nodes on the chosen transport (mem: inside a cluster, or TCP on 127.0.0.1)."""

    transport: str
    nursery: trio.Nursery
    cluster: hakit.Cluster | None = None
    made: dict[str, hakit.Node] = field(default_factory=dict)

    async def add(self, name: str, **kwargs: Any) -> hakit.Node:
        if self.cluster is not None and not kwargs.keys() - {"storage"}:
            node = await self.cluster.add_node(name, **kwargs)
        else:
            node = await self.open(name, **kwargs)
        self.made[name] = node
        return node

    async def open(self, name: str, **kwargs: Any) -> hakit.Node:
        """A node with any `Node` keyword (custom cluster name, frame size...)."""
        if self.cluster is not None:
            node = hakit.Node(
                name,
                network=self.cluster.network,
                event_sink=self.cluster.events.append,
                **kwargs,
            )
            await self.nursery.start(node._main)
            await node.listen(f"mem:{name}")
            return node
        node = hakit.Node(name, **kwargs)
        await self.nursery.start(node._main)
        await node.listen("127.0.0.1:0")
        return node


@pytest.fixture
async def nodes(transport: str) -> AsyncIterator[Nodes]:
    async with trio.open_nursery() as nursery:
        if transport == "mem":
            async with hakit.open_cluster(seed=1) as cluster:
                yield Nodes(transport, nursery, cluster)
        else:
            yield Nodes(transport, nursery)
        nursery.cancel_scope.cancel()


@dataclass
class Background:
    """An attach_master running in the background."""

    done: trio.Event = field(default_factory=trio.Event)
    result: hakit.StopReason | None = None
    error: BaseException | None = None

    async def wait(self) -> hakit.StopReason:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def run_attach(
    nursery: trio.Nursery,
    node: hakit.Node,
    address: str,
    params: hakit.ReplicaParams | None = None,
    **kwargs: Any,
) -> Background:
    bg = Background()

    async def go() -> None:
        try:
            bg.result = await node.attach_master(address, params, **kwargs)
        except hakit.HakitError as exc:
            bg.error = exc
        finally:
            bg.done.set()

    nursery.start_soon(go)
    return bg


async def master_with_replicas(
    nodes: Nodes, nursery: trio.Nursery, *names: str, params: hakit.MasterParams | None = None
) -> tuple[hakit.Node, list[hakit.Node], list[Background]]:
    """A master ("m") and replicas attached to it, each in a background `attach_master`."""
    master = await nodes.add("m")
    master.set_master_params(params or hakit.MasterParams())
    assert master.address is not None
    replicas, runs = [], []
    for name in names:
        replica = await nodes.add(name)
        runs.append(run_attach(nursery, replica, master.address))
        info = await master.attach_replica(timeout=5)
        assert info.name == name
        replicas.append(replica)
    return master, replicas, runs


async def force_master(
    nursery: trio.Nursery, master: hakit.Node, replica: hakit.Node, run: Background
) -> list[BaseException]:
    """Stop `replica`'s replication (`run`), then re-attach it with FORCE_MASTER while
    `master` serves its replicas; return once it is the master.

    Returns:
        The list the old master's `KilledByReplicaError` is appended to, once it comes.
    """
    killed: list[BaseException] = []

    async def master_side() -> None:
        try:
            await master.serve_replicas()
        except hakit.KilledByReplicaError as exc:
            killed.append(exc)

    nursery.start_soon(master_side)
    replica.cancel()
    await run.wait()
    assert master.address is not None
    params = hakit.ReplicaParams(mode=hakit.ReplicaMode.FORCE_MASTER)
    promoted = run_attach(nursery, replica, master.address, params)
    assert await promoted.wait() is hakit.StopReason.BECOMES_MASTER
    return killed


async def wait_until(predicate: Callable[[], bool], *, step: float = 0.01) -> None:
    """Poll a condition in virtual time (the clock is mocked, so this costs nothing)."""
    while not predicate():
        await trio.sleep(step)


async def commit(node: hakit.Node, **items: Any) -> hakit.CommitResult:
    async with node.transaction() as tx:
        for key, value in items.items():
            tx.put(key, value)
    assert tx.result is not None
    return tx.result


Waiter = Callable[[], Awaitable[None]]


@pytest.fixture
def io_clock() -> trio.testing.MockClock:
    """Virtual time for a test on real sockets (see `clock`)."""
    return trio.testing.MockClock(autojump_threshold=0.05)
