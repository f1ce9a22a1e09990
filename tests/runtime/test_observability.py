"""Statistics, the event log, determinism, and replication over a unix socket."""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio
import trio.testing
from trio.testing import MockClock

import hakit
from hakit import MasterParams, ReplicaMode, ReplicaParams, StopReason

from .conftest import Nodes, commit, run_attach, wait_until


async def test_statistics_describe_both_sides(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await nodes.add("m")
    master.set_master_params(MasterParams())
    replica = await nodes.add("r1")
    run_attach(nursery, replica, master.address)
    await master.attach_replica(timeout=5)
    for i in range(5):
        await commit(master, **{f"k{i}": i})
    stats = master.statistics()
    assert (stats.role, stats.txid, stats.keys, stats.commits) == ("master", 5, 5, 5)
    assert stats.generation == 1 and stats.address == master.address
    (link,) = stats.replicas
    assert (link.replica, link.state, link.acked_txid, link.lag) == ("r1", "streaming", 5, 0)
    assert link.bytes_sent > 0
    rstats = replica.statistics()
    assert (rstats.role, rstats.master, rstats.txid, rstats.applied) == ("replica", "m", 5, 5)


async def test_event_log_records_connect_sync_role_and_stop(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await nodes.add("m")
    master.set_master_params(MasterParams())
    replica = await nodes.add("r1")
    run = run_attach(nursery, replica, master.address)
    await master.attach_replica(timeout=5)
    replica.replica_stop()
    await run.wait()
    await wait_until(lambda: not master.replicas)
    kinds = [type(e).__name__ for e in replica.events]
    assert kinds == ["RoleChanged", "Connected", "ReplicaSynced", "ReplicaStopped", "RoleChanged"]
    master_kinds = [type(e).__name__ for e in master.events]
    assert master_kinds == ["RoleChanged", "Connected", "ReplicaSynced", "ReplicaDetached"]
    times = [e.time for e in replica.events]
    assert times == sorted(times)
    assert all(e.describe() for e in list(replica.events) + list(master.events))
    if nodes.cluster is not None:
        node_events = [e for e in nodes.cluster.events if not isinstance(e, hakit.MessageEvent)]
        assert len(node_events) == len(master.events) + len(replica.events)


def run_script(seed: int) -> list[tuple[float, str, str]]:
    async def script() -> list[tuple[float, str, str]]:
        cluster_cm = hakit.open_cluster(seed=seed, latency=(0.003, 0.002))
        async with cluster_cm as cluster, trio.open_nursery() as nursery:
            master = await cluster.add_node("m")
            master.set_master_params(MasterParams())
            r1, r2 = await cluster.add_node("r1"), await cluster.add_node("r2")
            run_attach(nursery, r1, "mem:m")
            run_attach(nursery, r2, "mem:m")
            for _ in range(2):
                await master.attach_replica(timeout=5)
            for i in range(20):
                await commit(master, **{f"k{i}": i})
            r1.cancel()
            assert await r1.wait_stopped() is StopReason.CANCELLED
            force = ReplicaParams(mode=ReplicaMode.FORCE_MASTER)
            assert await r1.attach_master("mem:m", force) is StopReason.BECOMES_MASTER
            assert (await r1.attach_replica(timeout=5)).name == "r2"  # r2 followed r1
            assert (await commit(r1, after=1)).acked == ("r2",)
            nursery.cancel_scope.cancel()
            return [(e.time, e.node, e.describe()) for e in cluster.events]

    return trio.run(script, clock=trio.testing.MockClock(autojump_threshold=0))


def test_same_seed_same_event_log() -> None:
    first, second = run_script(5), run_script(5)
    assert first == second
    assert any("master changed" in text for _, _, text in first)


async def test_replication_over_a_unix_socket(io_clock: MockClock, nursery: trio.Nursery) -> None:
    path = Path(tempfile.mkdtemp(prefix="hk")) / "m.sock"
    async with hakit.open_node("m", address=str(path)) as master, hakit.open_node("r1") as replica:
        assert master.address == str(path)
        master.set_master_params(MasterParams())
        run = run_attach(nursery, replica, f"unix:{path}")
        await master.attach_replica(timeout=5)
        assert (await commit(master, a=1)).acked == ("r1",)
        assert replica.get("a") == 1
        master.detach_replica("r1")
        assert await run.wait() is StopReason.MASTER_REQUESTED_DISCONNECT


async def test_event_log_and_cluster_say_what_they_hold(autojump_clock: MockClock) -> None:
    async with hakit.open_cluster(seed=3) as cluster:
        assert repr(cluster) == "<hakit.Cluster 'hakit' seed=3: 0 nodes; 0 events>"
        master = await cluster.add_node("alpha")
        master.set_master_params(MasterParams())
        await cluster.add_node("beta")
        assert repr(cluster) == (
            "<hakit.Cluster 'hakit' seed=3: 2 nodes: alpha (master, txid 0), "
            "beta (standalone, txid 0); 1 event>"
        )
        (changed,) = master.events.of_type(hakit.RoleChanged)
        assert changed.new == "master"  # typed: of_type returns list[RoleChanged]
        assert [type(event) for event in master.events] == [hakit.RoleChanged]


async def test_a_full_load_counts_its_bytes_and_progress(autojump_clock: MockClock) -> None:
    async with hakit.open_cluster(seed=1) as cluster:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams())
        for start in range(0, 40_000, 5_000):  # more pairs than one snapshot send carries
            async with master.transaction() as tx:
                for i in range(start, start + 5_000):
                    tx.put(f"key-{i:05}", i)
        replica = await cluster.add_node("r")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(replica.attach_master, "mem:m")
            info = await master.attach_replica(timeout=5)
            assert info.name == "r"
            await wait_until(lambda: master.statistics().replicas[0].state == "streaming")
            (link,) = master.statistics().replicas
            assert link.sync == "full" and link.load_progress == 1.0
            # The snapshot's frames are counted: at least one byte per key and value.
            assert link.bytes_sent > 40_000 * len("key-00000")
            assert replica.txid == master.txid and len(replica.items()) == 40_000
            # A replica that is already equal loads nothing: no progress to report.
            replica.replica_stop()
            await replica.wait_stopped()
            nursery.start_soon(replica.attach_master, "mem:m")
            await master.attach_replica(timeout=5)
            (link,) = master.statistics().replicas
            assert link.sync == "equal" and link.load_progress is None
            nursery.cancel_scope.cancel()
