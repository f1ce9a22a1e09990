"""The run's one replica reader: synced replicas on mem: links apply without a task step each.

A synced replica's task parks while the reader applies and acknowledges its transactions
(`hakit._runtime._follower`). These tests pin what that must not change: every replica
applies and acknowledges every commit, anything else (keep-alives, stops, errors) is
handled by the replica's own task as before, and the reader belongs to no node.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

import hakit
from hakit import MasterParams, ReplicaParams, StopReason

from .conftest import commit, run_attach, wait_until


class _Steps(trio.abc.Instrument):
    """Counts task steps by task name."""

    def __init__(self) -> None:
        self.steps: Counter[str] = Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task.name] += 1


def _attach_steps(steps: Counter[str]) -> int:
    # The tasks `run_attach` starts: each runs one replica's attach_master.
    return sum(count for name, count in steps.items() if name.endswith("run_attach.<locals>.go"))


async def _cluster(
    cluster: hakit.Cluster, nursery: trio.Nursery, count: int, **params: Any
) -> tuple[hakit.Node, list[hakit.Node], list[Any]]:
    master = await cluster.add_node("m")
    master.set_master_params(MasterParams(**params))
    replicas, runs = [], []
    for i in range(count):
        replica = await cluster.add_node(f"r{i}")
        runs.append(run_attach(nursery, replica, "mem:m", ReplicaParams()))
        await master.attach_replica(timeout=5)
        replicas.append(replica)
    return master, replicas, runs


async def test_synced_replicas_apply_commits_without_a_task_step_of_their_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hakit.open_cluster() as cluster, trio.open_nursery() as nursery:
        master, replicas, runs = await _cluster(cluster, nursery, 5)
        await commit(master, warm=0)
        instrument = _Steps()
        trio.lowlevel.add_instrument(instrument)
        try:
            for i in range(20):
                result = await commit(master, **{f"k{i}": i})
                assert sorted(result.acked) == [r.name for r in replicas]
        finally:
            trio.lowlevel.remove_instrument(instrument)
        # Every replica holds every commit; none of their tasks ran for it.
        for replica in replicas:
            assert replica.txid == master.txid and replica.get("k19") == 19
        assert _attach_steps(instrument.steps) == 0
        reader_steps = sum(n for name, n in instrument.steps.items() if "replica reader" in name)
        assert 20 <= reader_steps <= 40  # about one step per commit, for all five replicas
        # Keep-alives are still answered (by each replica's own task): idle for a while,
        # nobody is detached and every replica still takes the next commit.
        await trio.sleep(5 * master.master_params.keepalive_interval)  # type: ignore[union-attr]
        assert sorted(master.replicas) == [r.name for r in replicas]
        result = await commit(master, after=1)
        assert len(result.acked) == 5
        assert not any(bg.done.is_set() for bg in runs)
        nursery.cancel_scope.cancel()


async def test_the_reader_outlives_the_node_whose_replica_started_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # r0 attached first, so its task started the reader; its crash must not stop the
    # reader applying for the others (it is a system task, in no node's nursery).
    async with hakit.open_cluster() as cluster, trio.open_nursery() as nursery:
        master, replicas, _ = await _cluster(cluster, nursery, 3)
        await commit(master, a=1)
        await cluster.crash("r0")
        await wait_until(lambda: "r0" not in master.replicas)
        result = await commit(master, b=2)
        assert sorted(result.acked) == ["r1", "r2"]
        assert replicas[1].get("b") == 2 and replicas[2].get("b") == 2
        nursery.cancel_scope.cancel()


class _FailingStorage(hakit.MemoryStorage):
    def __init__(self, error: type[BaseException]) -> None:
        super().__init__()
        self.error = error

    def apply(self, entries: Any) -> None:
        for entry in entries:
            if any(op[1] == "boom" for op in entry[2]):
                raise self.error("the disk is on fire")
        super().apply(entries)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
async def test_an_error_applying_is_raised_by_its_own_attach_and_nobody_elses(
    autojump_clock: trio.testing.MockClock, error: type[BaseException]
) -> None:
    # Even what is not an Exception: raised in the reader (a system task) it would end
    # the whole run.
    async with hakit.open_cluster() as cluster, trio.open_nursery() as nursery:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams(ack_policy=hakit.AckPolicy.ONE))
        bad = await cluster.add_node("bad", storage=_FailingStorage(error))
        good = await cluster.add_node("good")
        errors: list[BaseException] = []

        async def attach_bad() -> None:
            try:
                await bad.attach_master("mem:m", ReplicaParams())
            except error as exc:
                errors.append(exc)

        nursery.start_soon(attach_bad)
        await master.attach_replica(timeout=5)
        good_run = run_attach(nursery, good, "mem:m", ReplicaParams())
        await master.attach_replica(timeout=5)
        await commit(master, a=1)
        await commit(master, boom=1)
        await wait_until(lambda: bool(errors))
        assert str(errors[0]) == "the disk is on fire"
        await wait_until(lambda: master.replicas == ["good"])
        result = await commit(master, c=3)
        assert result.acked == ("good",) and good.get("c") == 3
        assert bad.get("boom") is None and bad.get("a") == 1
        assert not good_run.done.is_set()
        nursery.cancel_scope.cancel()


async def test_a_stop_while_the_reader_holds_the_stream_ends_only_that_replica(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hakit.open_cluster() as cluster, trio.open_nursery() as nursery:
        master, replicas, runs = await _cluster(cluster, nursery, 3)
        await commit(master, a=1)
        replicas[1].replica_stop()
        assert await runs[1].wait() is StopReason.STOPPED_BY_LOCAL_REQUEST
        await wait_until(lambda: "r1" not in master.replicas)
        result = await commit(master, b=2)
        assert sorted(result.acked) == ["r0", "r2"]
        assert replicas[1].get("b") is None and replicas[0].get("b") == 2
        # Attached again, it is read by the same reader and takes what it missed.
        again = run_attach(nursery, replicas[1], "mem:m", ReplicaParams())
        await master.attach_replica(timeout=5)
        result = await commit(master, c=3)
        assert sorted(result.acked) == ["r0", "r1", "r2"]
        assert replicas[1].get("b") == 2 and replicas[1].get("c") == 3
        assert not again.done.is_set()
        nursery.cancel_scope.cancel()


async def test_frames_in_flight_are_applied_when_they_come_due(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # With latency the reader is woken by the frames' due time, not by their sending; a
    # commit takes a round trip, and still no replica task steps for it.
    async with hakit.open_cluster() as cluster, trio.open_nursery() as nursery:
        master, replicas, _ = await _cluster(cluster, nursery, 3)
        await commit(master, a=1)
        for replica in replicas:
            cluster.network.set_latency("m", replica.name, 0.25, 0.0)
        instrument = _Steps()
        trio.lowlevel.add_instrument(instrument)
        try:
            start = trio.current_time()
            result = await commit(master, b=2)
            assert trio.current_time() - start == 0.5
        finally:
            trio.lowlevel.remove_instrument(instrument)
        assert sorted(result.acked) == ["r0", "r1", "r2"]
        assert all(replica.get("b") == 2 for replica in replicas)
        assert _attach_steps(instrument.steps) == 0
        nursery.cancel_scope.cancel()
