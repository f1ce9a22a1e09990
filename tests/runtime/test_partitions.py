"""Partitions on the simulated network: silence, timeouts on both sides, and healing."""

from __future__ import annotations

import pytest
import trio
from trio.testing import MockClock

import hakit
from hakit import MasterParams, ReplicaParams, StopReason

from .conftest import commit, run_attach


async def test_partition_detaches_on_both_sides_and_heal_allows_resync(
    autojump_clock: MockClock,
    nursery: trio.Nursery,
) -> None:
    async with hakit.open_cluster(seed=2) as cluster:
        master = await cluster.add_node("m")
        master.set_master_params(
            MasterParams(keepalive_interval=0.2, detach_timeout=1.0, synch_timeout=0.5)
        )
        r1, r2 = await cluster.add_node("r1"), await cluster.add_node("r2")
        params = ReplicaParams(wait_data_timeout=0.5)
        run1 = run_attach(nursery, r1, "mem:m", params)
        run_attach(nursery, r2, "mem:m", params)
        await master.attach_replica(timeout=5)
        await master.attach_replica(timeout=5)
        await commit(master, before=0)

        cluster.network.partition("m", ["r1"])
        result = await commit(master, during=1)
        assert result.acked == ("r2",) and result.detached == ("r1",)
        assert await run1.wait() is StopReason.CONNECTION_ABORTED
        assert "wait_data_timeout" in r1.events.of_type(hakit.ReplicaStopped)[-1].detail
        assert r1.get("during") is None

        cluster.network.heal()
        run_attach(nursery, r1, "mem:m", params)
        info = await master.attach_replica(timeout=5)
        assert info.sync == "incremental"
        assert r1.get("during") == 1
        assert (await commit(master, after=2)).acked in (("r2", "r1"), ("r1", "r2"))


async def test_connect_across_a_partition_waits_then_times_out(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    async with hakit.open_cluster(seed=2) as cluster:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams())
        r1 = await cluster.add_node("r1")
        cluster.network.partition("m", "r1")
        with pytest.raises(hakit.NetworkTimeoutError, match="partition") as info:
            await r1.attach_master("mem:m", timeout=1)
        assert info.value.stop_reason is StopReason.CONNECTION_ABORTED


async def test_an_attach_waiting_across_a_partition_attaches_when_it_heals(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    async with hakit.open_cluster(seed=2) as cluster:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams())
        r1 = await cluster.add_node("r1")
        cluster.network.partition("m", "r1")
        run = run_attach(nursery, r1, "mem:m", timeout=30)
        await trio.sleep(5)  # five seconds of partition
        assert not run.done.is_set()
        cluster.network.heal()
        assert (await master.attach_replica(timeout=5)).name == "r1"
