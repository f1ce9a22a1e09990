"""Lifecycle: a replica waits for a master that is not there yet; stops and syncs can be awaited."""

from __future__ import annotations

import functools
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from trio.testing import MockClock

import hakit
from hakit import MasterParams, ReplicaParams, StopReason

from .conftest import Nodes, commit, run_attach


def _free_tcp_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(params=["mem", "tcp", "unix"])
def any_transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def lifecycle_clock(any_transport: str) -> MockClock:
    return MockClock(autojump_threshold=0.0 if any_transport == "mem" else 0.05)


@pytest.fixture
async def place(any_transport: str) -> AsyncIterator[tuple[hakit.Cluster | None, str]]:
    """Where the master will listen (nothing listens there yet), and the cluster for mem:."""
    if any_transport == "mem":
        async with hakit.open_cluster(seed=5) as cluster:
            yield cluster, "mem:m"
    elif any_transport == "tcp":
        yield None, _free_tcp_address()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield None, str(Path(tmp) / "master.sock")


async def _node(cluster: hakit.Cluster | None, nursery: trio.Nursery, name: str) -> hakit.Node:
    if cluster is not None:
        return await cluster.add_node(name)
    node = hakit.Node(name)
    await nursery.start(node._main)
    return node


async def _listen(cluster: hakit.Cluster | None, node: hakit.Node, address: str) -> None:
    if cluster is None:  # a cluster's node already listens at mem:<name>
        assert await node.listen(address) == address


async def test_a_replica_started_before_its_master_waits_for_it(
    any_transport: str,
    lifecycle_clock: MockClock,
    place: tuple[hakit.Cluster | None, str],
    nursery: trio.Nursery,
) -> None:
    cluster, address = place
    replica = await _node(cluster, nursery, "r1")
    started = trio.current_time()
    attached: list[hakit.ReplicaInfo] = []

    async def replica_side() -> None:
        attached.append(
            await nursery.start(functools.partial(replica.attach_master, timeout=10), address)
        )

    nursery.start_soon(replica_side)
    await trio.testing.wait_all_tasks_blocked()  # its first attempt failed: it is waiting
    await trio.sleep(2)  # the master comes up two seconds later
    assert not attached and replica.role is hakit.Role.STANDALONE
    master = await _node(cluster, nursery, "m")
    await commit(master, before="replication")
    master.set_master_params(MasterParams())
    await _listen(cluster, master, address)
    info = await master.attach_replica(timeout=5)
    assert info.name == "r1"
    assert trio.current_time() - started < 10  # attached within its timeout
    while not attached:
        await trio.testing.wait_all_tasks_blocked()
    assert attached == [hakit.ReplicaInfo("r1", "full", 1)]
    assert replica.get("before") == "replication"
    assert (await commit(master, x=1)).acked == ("r1",)


async def test_a_replica_waits_for_a_node_to_become_master(
    any_transport: str,
    lifecycle_clock: MockClock,
    place: tuple[hakit.Cluster | None, str],
    nursery: trio.Nursery,
) -> None:
    cluster, address = place
    master = await _node(cluster, nursery, "m")
    await _listen(cluster, master, address)
    replica = await _node(cluster, nursery, "r1")
    run = run_attach(nursery, replica, address, timeout=10)
    await trio.sleep(3)  # it listens, but is no master yet: the replica waits
    assert not run.done.is_set()
    master.set_master_params(MasterParams())
    assert (await master.attach_replica(timeout=5)).name == "r1"
    replica.replica_stop()
    assert await run.wait() is StopReason.STOPPED_BY_LOCAL_REQUEST


async def test_waiting_ends_in_network_timeout_naming_the_last_failure(
    any_transport: str,
    lifecycle_clock: MockClock,
    place: tuple[hakit.Cluster | None, str],
    nursery: trio.Nursery,
) -> None:
    cluster, address = place
    replica = await _node(cluster, nursery, "r1")
    started = trio.current_time()
    with pytest.raises(hakit.NetworkTimeoutError) as info:
        await replica.attach_master(address, timeout=3)
    assert trio.current_time() - started >= 3
    message = str(info.value)
    assert message.startswith(f"the master at {address} was not reached within 3 s (")
    assert "attempts; the last: could not reach the master" in message
    assert info.value.stop_reason is StopReason.CONNECTION_ABORTED
    assert info.value.address == address
    (stopped,) = replica.events.of_type(hakit.ReplicaStopped)
    assert stopped.reason is StopReason.CONNECTION_ABORTED
    assert await replica.wait_stopped() is StopReason.CONNECTION_ABORTED


async def test_a_stop_while_waiting_for_the_master_returns_its_reason(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    replica = await nodes.add("r1")
    address = "mem:nobody" if nodes.cluster is not None else _free_tcp_address()
    run = run_attach(nursery, replica, address, timeout=60)
    await trio.sleep(2)
    replica.replica_stop()
    assert await run.wait() is StopReason.STOPPED_BY_LOCAL_REQUEST
    (stopped,) = replica.events.of_type(hakit.ReplicaStopped)
    assert stopped.detail == "replica_stop() was called while waiting for the master"


async def test_a_refused_handshake_is_not_retried(nodes: Nodes, clock: MockClock) -> None:
    master = await nodes.add("m")
    master.set_master_params(MasterParams())
    intruder = await nodes.open("intruder", cluster_name="elsewhere")
    assert master.address is not None
    started = trio.current_time()
    with pytest.raises(hakit.HAProtocolError, match="cluster 'elsewhere'"):
        await intruder.attach_master(master.address, timeout=30)
    assert trio.current_time() - started < 1


async def test_replica_stop_can_be_awaited_then_the_node_attaches_again(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await nodes.add("m")
    master.set_master_params(MasterParams())
    replica = await nodes.add("r1")
    assert master.address is not None
    assert await replica.wait_stopped() is None  # never attached: returns at once
    info = await nursery.start(replica.attach_master, master.address)
    assert info == hakit.ReplicaInfo("r1", "equal", 0)  # both empty
    assert replica.role is hakit.Role.REPLICA
    assert (await commit(master, a=1)).acked == ("r1",)  # the master counts it already
    replica.replica_stop()
    assert await replica.wait_stopped() is StopReason.STOPPED_BY_LOCAL_REQUEST
    assert replica.role is hakit.Role.STANDALONE
    info = await nursery.start(replica.attach_master, master.address)
    assert info.sync == "equal"
    replica.cancel()
    assert await replica.wait_stopped() is StopReason.CANCELLED


async def test_attach_right_after_a_stop_waits_for_the_old_attach_to_end(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await nodes.add("m")
    master.set_master_params(MasterParams())
    replica = await nodes.add("r1")
    assert master.address is not None
    await nursery.start(replica.attach_master, master.address)
    await commit(master, a=1)
    replica.cancel()  # no wait: the next attach waits for this one to end
    info = await nursery.start(replica.attach_master, master.address)
    assert (info.sync, info.txid) == ("equal", 1)
    with pytest.raises(hakit.LocalProtocolError, match="already attached"):
        await replica.attach_master(master.address)  # a running attach is still refused


async def test_nursery_start_returns_once_synced_with_the_data_in_place(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await nodes.add("m")
    async with master.transaction() as tx:
        for i in range(500):
            tx.put(f"k{i}", i)
    master.set_master_params(MasterParams())
    replica = await nodes.add("r1")
    assert master.address is not None
    info = await nursery.start(replica.attach_master, master.address)
    assert info == hakit.ReplicaInfo("r1", "full", 1)
    assert replica.txid == 1 and replica.get("k499") == 499  # no settling needed


async def test_nursery_start_raises_when_the_attach_fails_before_the_sync(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await nodes.add("m")
    master.set_master_params(MasterParams())
    intruder = await nodes.open("intruder", cluster_name="elsewhere")
    assert master.address is not None
    with pytest.raises(hakit.HAProtocolError):
        await nursery.start(intruder.attach_master, master.address)
    params = ReplicaParams(on_transaction=lambda record: None)
    replica = await nodes.add("r1")
    nowhere = "mem:nobody" if nodes.cluster else _free_tcp_address()
    with pytest.raises(hakit.NetworkTimeoutError):
        await nursery.start(functools.partial(replica.attach_master, timeout=1), nowhere, params)


async def test_a_node_that_is_not_running_cannot_attach(autojump_clock: MockClock) -> None:
    node = hakit.Node("idle")
    with pytest.raises(hakit.NodeClosedError):
        await node.attach_master("mem:m")
