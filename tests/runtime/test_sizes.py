"""Nothing committed is impossible to replicate: oversized writes are refused, frames are cut."""

from __future__ import annotations

import pytest
import trio
from trio.testing import MockClock

import hakit
from hakit import MasterMode, MasterParams, StopReason

from .conftest import Nodes, commit, run_attach

SMALL_FRAMES = 256 * 1024


async def test_a_write_too_large_to_replicate_is_refused_at_commit(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await nodes.add("m")
    master.set_master_params(MasterParams())
    replica = await nodes.add("r1")
    assert master.address is not None
    await nursery.start(replica.attach_master, master.address)
    with pytest.raises(hakit.TransactionTooLargeError) as info:
        async with master.transaction() as tx:
            tx.put("big", b"x" * 20_000_000)
    limit = hakit.protocol.DEFAULT_MAX_FRAME_SIZE - 1024
    assert (info.value.size > 20_000_000, info.value.limit) == (True, limit)
    assert f"the largest replicable transaction, {limit} bytes" in str(info.value)
    assert isinstance(info.value, hakit.InvalidArgumentError)
    assert master.txid == 0 and master.get("big") is None  # nothing was committed
    assert (await commit(master, small=1)).acked == ("r1",)  # and replication goes on
    assert replica.get("small") == 1


async def test_a_standalone_node_refuses_it_too(autojump_clock: MockClock) -> None:
    async with hakit.open_node("n", max_frame_size=SMALL_FRAMES) as node:
        with pytest.raises(hakit.TransactionTooLargeError):
            async with node.transaction() as tx:
                tx.put("big", b"x" * SMALL_FRAMES)
        async with node.transaction() as tx:
            tx.put("fits", b"x" * (SMALL_FRAMES - 2048))
        assert node.txid == 1


async def test_a_backlog_larger_than_a_frame_resyncs_incrementally(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await nodes.open("m", max_frame_size=SMALL_FRAMES)
    master.set_master_params(MasterParams(mode=MasterMode.STATEFUL | MasterMode.HOTSYNC))
    replica = await nodes.open("r1", max_frame_size=SMALL_FRAMES)
    assert master.address is not None
    await nursery.start(replica.attach_master, master.address)
    await commit(master, first=1)
    replica.replica_stop()
    assert await replica.wait_stopped() is StopReason.STOPPED_BY_LOCAL_REQUEST
    value = b"v" * (SMALL_FRAMES // 4)
    for i in range(12):  # three frames' worth, missed by the replica
        await commit(master, **{f"k{i}": value})
    info = await nursery.start(replica.attach_master, master.address)
    assert (info.sync, info.txid) == ("incremental", 13)
    assert replica.get("k11") == value


async def test_a_snapshot_of_large_values_is_cut_into_frames_that_fit(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await nodes.open("m", max_frame_size=SMALL_FRAMES)
    value = b"v" * (SMALL_FRAMES // 3)
    for i in range(10):
        await commit(master, **{f"k{i}": value})
    master.set_master_params(MasterParams())
    replica = await nodes.open("r1", max_frame_size=SMALL_FRAMES)
    assert master.address is not None
    info = await nursery.start(replica.attach_master, master.address)
    assert (info.sync, info.txid) == ("full", 10)
    assert all(replica.get(f"k{i}") == value for i in range(10))


async def test_an_asynchronous_master_ships_a_large_backlog(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    params = MasterParams(mode=MasterMode.ASYNC, async_buffer_bytes=16 * SMALL_FRAMES)
    master = await nodes.open("m", max_frame_size=SMALL_FRAMES)
    master.set_master_params(params)
    replica = await nodes.open("r1", max_frame_size=SMALL_FRAMES)
    assert master.address is not None
    run = run_attach(nursery, replica, master.address)
    await master.attach_replica(timeout=5)
    value = b"v" * (SMALL_FRAMES // 5)
    for i in range(20):  # queued faster than sent: many transactions per flush
        await commit(master, **{f"k{i}": value})
    while replica.txid < 20 and not run.done.is_set():
        await trio.sleep(0.1)
    assert replica.txid == 20 and not run.done.is_set()
