"""The safety property, checked by hypothesis on the simulated network.

Random interleavings of commits, replica stops, partitions and force-master never lose a
transaction that a synchronous commit reported as acknowledged, and never let two nodes accept
writes in the same generation.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field

import trio
import trio.lowlevel
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hakit
from hakit import MasterParams, ReplicaMode, ReplicaParams

NAMES = ("a", "b", "c")

step = st.one_of(
    st.tuples(st.just("commit"), st.sampled_from(NAMES)),
    st.tuples(st.just("commit"), st.sampled_from(NAMES)),
    st.tuples(st.just("stop"), st.sampled_from(NAMES)),
    st.tuples(st.just("attach"), st.sampled_from(NAMES)),
    st.tuples(st.just("partition"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("heal")),
    st.tuples(st.just("force"), st.sampled_from(NAMES)),
)
schedule = st.lists(
    st.tuples(step, st.sampled_from([0.0, 0.0, 0.001, 0.05, 0.3, 1.0])), max_size=25
)


@dataclass
class History:
    acknowledged: dict[str, tuple[int, str]] = field(default_factory=dict)  # key -> (gen, node)
    writers: dict[int, set[str]] = field(default_factory=dict)  # generation -> nodes
    successes: int = 0


async def scenario(steps: list[tuple[tuple[str, ...], float]]) -> History:
    history = History()
    params = MasterParams(synch_timeout=0.5, keepalive_interval=0.1, detach_timeout=1.0,
                          commit_timeout=1.0)  # fmt: skip
    async with hakit.open_cluster(seed=7) as cluster, trio.open_nursery() as nursery:
        nodes = {name: await cluster.add_node(name) for name in NAMES}
        nodes["a"].set_master_params(params)
        counter = iter(range(10**6))

        def master() -> hakit.Node | None:
            masters = [n for n in nodes.values() if n.role is hakit.Role.MASTER]
            return max(masters, key=lambda n: n.generation) if masters else None

        async def attach(node: hakit.Node, mode: ReplicaMode = ReplicaMode.NONE) -> None:
            target = master()
            if target is None or target is node or node.role is not hakit.Role.STANDALONE:
                return
            if node._session is not None:
                return
            replica_params = ReplicaParams(mode=mode, wait_data_timeout=0.5, master_params=params)
            with suppress(hakit.HakitError):  # refused attaches are part of the schedule
                await node.attach_master(target.address, replica_params, timeout=1.0)

        async def do_commit(node: hakit.Node) -> None:
            key = f"k{next(counter)}"
            try:
                async with node.transaction() as tx:
                    tx.put(key, node.name)
            except hakit.HakitError:
                return
            result = tx.result
            assert result is not None
            history.successes += 1
            history.writers.setdefault(result.generation, set()).add(node.name)
            if result.acked:
                history.acknowledged[key] = (result.generation, node.name)

        for name in ("b", "c"):
            nursery.start_soon(attach, nodes[name])
        await trio.sleep(0.1)
        for (kind, *args), delay in steps:
            if kind == "commit":
                nursery.start_soon(do_commit, nodes[args[0]])
            elif kind == "stop":
                if nodes[args[0]]._session is not None:
                    nodes[args[0]].replica_stop()
            elif kind == "attach":
                nursery.start_soon(attach, nodes[args[0]])
            elif kind == "partition":
                if args[0] != args[1]:
                    cluster.network.partition(args[0], args[1])
            elif kind == "heal":
                cluster.network.heal()
            elif kind == "force":
                node = nodes[args[0]]
                if node._session is not None:
                    node.cancel()
                    while node._session is not None:
                        await trio.lowlevel.checkpoint()
                nursery.start_soon(attach, node, ReplicaMode.FORCE_MASTER)
            await trio.sleep(delay)
        cluster.network.heal()
        await trio.sleep(5)
        final = master()
        # A write acknowledged by a replica survives on the newest master.
        if final is not None:
            for key, (generation, _) in history.acknowledged.items():
                if generation <= final.generation:
                    assert final.get(key) is not None, f"acknowledged {key} lost on {final.name}"
            # Replicas still attached have converged on the master's state.
            for node in nodes.values():
                session = node._session
                if node.role is hakit.Role.REPLICA and session and session.master == final.name:
                    assert dict(node.items()) == dict(final.items()), node.name
        nursery.cancel_scope.cancel()
    return history


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedule)
def test_no_acknowledged_write_lost_and_one_writer_per_generation(steps) -> None:
    history = trio.run(scenario, steps, clock=trio.testing.MockClock(autojump_threshold=0))
    for generation, writers in history.writers.items():
        if generation > 0:
            assert len(writers) == 1, f"generation {generation} had writers {writers}"


def test_scenario_is_exercised() -> None:
    # Guard against a property that passes because nothing happens.
    steps = [(("commit", "a"), 0.05)] * 3 + [(("force", "b"), 0.5), (("commit", "b"), 0.05)]
    history = trio.run(scenario, steps, clock=trio.testing.MockClock(autojump_threshold=0))
    assert history.successes == 4
    assert len(history.acknowledged) == 4
    assert history.writers == {1: {"a"}, 2: {"b"}}


def test_stopped_replica_cannot_write_in_its_masters_generation() -> None:
    steps = [(("stop", "b"), 0.5), (("commit", "b"), 0.5), (("commit", "a"), 0.5)]
    history = trio.run(scenario, steps, clock=trio.testing.MockClock(autojump_threshold=0))
    assert history.writers == {1: {"a"}}
