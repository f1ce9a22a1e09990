"""History identity: divergent histories are detected, never called equal (issue 7 point 1).

Also the fencing rules that rest on it (issue 8): a master steps down only on a valid
KILL_MASTER from its promoter or on proof of a newer history, never on a stranger's frame.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

import hakit
from hakit import MasterParams, Notification, ReplicaParams
from hakit.protocol import PROTOCOL_VERSION, encode_frame, parse_message
from hakit.protocol import _messages as m
from hakit.transports import FramedStream, connect

from .conftest import Nodes, commit, master_with_replicas, run_attach, wait_until


async def cut_off(replica: hakit.Node, run: object) -> None:
    """End `replica`'s attach (as if cut off from its master, it stops replicating)."""
    replica.cancel()
    await run.wait()  # type: ignore[attr-defined]


async def two_hand_promoted_masters(
    nodes: Nodes, nursery: trio.Nursery, **b_kwargs: object
) -> tuple[hakit.Node, hakit.Node]:
    """The issue's repro: m and r1 both promoted by hand while cut off, both at generation 2,
    both committing txid 2 with a different `x`."""
    master, (replica,), (run,) = await master_with_replicas(nodes, nursery, "r1")
    await commit(master, x="first")
    await cut_off(replica, run)
    master.stop_master()
    master.set_master_params(MasterParams())
    replica.set_master_params(MasterParams())
    assert master.generation == replica.generation == 2
    assert master.history_id != replica.history_id
    await commit(master, x="from m")
    await commit(replica, x="from r1")
    assert master.txid == replica.txid == 2
    return master, replica


async def test_hand_promoted_histories_diverge_and_the_replica_keeps_what_it_discards(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master, replica = await two_hand_promoted_masters(nodes, nursery)
    promotions = [
        (event.node, event.generation, event.history)
        for node in (master, replica)
        for event in node.events.of_type(hakit.RoleChanged)
        if isinstance(event, hakit.RoleChanged) and event.new == "master"
    ]
    assert promotions[-1][1] == promotions[-2][1] == 2  # masters of one generation...
    assert promotions[-1][2] != promotions[-2][2]  # ...never of one history
    replica.stop_master()
    notes: list[tuple[Notification, str]] = []
    params = ReplicaParams(on_notification=lambda what, detail: notes.append((what, detail)))
    assert master.address is not None
    run_attach(nursery, replica, master.address, params)
    info = await master.attach_replica(timeout=5)
    # Not "equal": same txid, same generation, but another history.
    assert info.sync == "full"
    assert replica.get("x") == master.get("x") == "from m"
    assert dict(replica.items()) == dict(master.items())
    assert replica.history_id == master.history_id
    (diverged,) = replica.events.of_type(hakit.HistoryDiverged)
    assert isinstance(diverged, hakit.HistoryDiverged)
    assert (diverged.master, diverged.first_txid, diverged.last_txid) == ("m", 2, 2)
    assert "txids 2..2" in diverged.describe()
    assert any(what is Notification.HISTORY_DIVERGED and "2..2" in d for what, d in notes)
    (kept,) = replica.discarded()
    assert (kept.master, kept.first_txid, kept.last_txid) == ("m", 2, 2)
    assert kept.transactions == (hakit.TransactionRecord(2, 2, [[0, "x", "from r1"]]),)
    assert kept.replaced == (("x", "from r1"),)
    # From now on it is an ordinary replica of m's history.
    result = await commit(master, y=1)
    assert result.acked == ("r1",) and result.history == master.history_id
    await wait_until(lambda: replica.get("y") == 1)


async def test_a_restarted_sqlite_replica_keeps_the_values_it_discards_in_its_file(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    path = tmp_path / "r1.db"
    master = await nodes.add("m")
    master.set_master_params(MasterParams())
    assert master.address is not None
    replica = await nodes.add("r1", storage=hakit.SqliteStorage(path))
    bg = run_attach(nursery, replica, master.address)
    await master.attach_replica(timeout=5)
    await commit(master, x="first", kept="same")
    await cut_off(replica, bg)
    master.stop_master()
    master.set_master_params(MasterParams())
    replica.set_master_params(MasterParams())
    await commit(master, x="from m")
    await commit(replica, x="from r1", extra="only on r1")
    replica.stop_master()
    await replica.aclose()
    # Restarted: its in-memory log is gone, the file keeps its data and history.
    again = await nodes.open("r1b", storage=hakit.SqliteStorage(path))
    run_attach(nursery, again, master.address)
    assert (await master.attach_replica(timeout=5)).sync == "full"
    assert dict(again.items()) == {"x": "from m", "kept": "same"}
    (kept,) = again.discarded()
    assert (kept.first_txid, kept.last_txid, kept.transactions) == (2, 2, ())
    assert sorted(kept.replaced) == [("extra", "only on r1"), ("x", "from r1")]
    again.cancel()
    await wait_until(lambda: again.role is hakit.Role.STANDALONE)
    await again.aclose()
    with hakit.SqliteStorage(path) as reopened:
        assert reopened.discarded()[0]["last_txid"] == 2


async def test_fresh_standalone_writers_are_told_apart(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    # Two fresh databases written standalone (generation 0) hold different txid 1s.
    a = await nodes.add("a")
    b = await nodes.add("b")
    await commit(a, x="a")
    await commit(b, x="b")
    assert a.history_id and b.history_id and a.history_id != b.history_id
    a.set_master_params(MasterParams())
    assert a.address is not None
    run_attach(nursery, b, a.address)
    assert (await a.attach_replica(timeout=5)).sync == "full"
    assert b.get("x") == "a"
    assert [(d.first_txid, d.last_txid) for d in b.discarded()] == [(1, 1)]


async def test_a_replica_on_the_same_history_is_equal_and_adopts_it(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master, (replica,), (run,) = await master_with_replicas(
        nodes, nursery, "r1", params=MasterParams(mode=hakit.MasterMode.STATEFUL)
    )
    await commit(master, x=1)
    await cut_off(replica, run)
    await commit(master, x=2)
    assert master.address is not None
    run_attach(nursery, replica, master.address)
    assert (await master.attach_replica(timeout=5)).sync == "incremental"
    assert replica.history_id == master.history_id
    assert replica.storage.history == master.storage.history
    assert replica.discarded() == []


# -- fencing: who may depose a master ---------------------------------------------------------


async def raw_hello(nodes: Nodes, address: str, **fields: object) -> m.Message:
    values: dict[str, object] = dict(
        generation=0, version=PROTOCOL_VERSION, cluster="hakit", node="x", txid=0,
        last_generation=0, flags=0, address=None, history=[],
    )  # fmt: skip
    values.update(fields)
    network = nodes.cluster.network if nodes.cluster else None
    stream = await connect(address, network=network, source="stranger")
    async with FramedStream(stream) as framed:
        await framed.send(m.Hello(**values).encode())  # type: ignore[arg-type]
        answer = await framed.receive()
    return parse_message(answer[0])


@pytest.mark.parametrize(
    "fields",
    [
        {"generation": 99},
        {"generation": 99, "cluster": "other"},
        {"generation": 2**63 - 1, "history": [["made-up", 1]]},
    ],
    ids=["higher-generation", "wrong-cluster", "huge-generation"],
)
async def test_a_strangers_hello_never_deposes_a_master(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery, fields: dict[str, object]
) -> None:
    master, (replica,), _ = await master_with_replicas(nodes, nursery, "r1")
    assert master.address is not None
    reply = await raw_hello(nodes, master.address, **fields)
    assert isinstance(reply, m.Reject)
    assert master.role is hakit.Role.MASTER and master.generation == 1
    result = await commit(master, still="writable")
    assert result.acked == ("r1",)
    await wait_until(lambda: replica.get("still") == "writable")


async def test_an_unstorable_generation_is_refused_where_it_enters(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master, _, _ = await master_with_replicas(nodes, nursery, "r1")
    assert master.address is not None
    network = nodes.cluster.network if nodes.cluster else None
    stream = await connect(master.address, network=network, source="stranger")
    async with FramedStream(stream) as framed:
        wire = [int(m.Kind.HELLO), 2**64 - 1, PROTOCOL_VERSION, "hakit", "x", 0, 0, 0, None, []]
        await framed.send(encode_frame(wire))
        with pytest.raises(EOFError):
            await framed.receive()
    refused = master.events.of_type(hakit.ConnectionRefused)[-1]
    assert isinstance(refused, hakit.ConnectionRefused) and "bad generation" in refused.detail
    assert master.role is hakit.Role.MASTER and master.generation == 1


async def test_proof_of_a_newer_history_deposes_the_master_and_fails_its_waiting_commits(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    if nodes.cluster is None:
        pytest.skip("needs the simulated network's partitions")
    params = MasterParams(synch_timeout=60.0)
    master, (_, r2), (_, run2) = await master_with_replicas(
        nodes, nursery, "r1", "r2", params=params
    )
    await commit(master, x=1)
    # r2 is cut off and promoted by hand: its history continues the master's.
    await cut_off(r2, run2)
    r2.set_master_params(MasterParams())
    await commit(r2, x="r2's")
    r2.stop_master()
    # A commit on the old master waits for r1, which no longer hears it.
    nodes.cluster.network.partition("m", "r1")
    outcome: list[BaseException | hakit.CommitResult] = []

    async def waiting_commit() -> None:
        try:
            outcome.append(await commit(master, lost="maybe"))
        except hakit.HakitError as exc:
            outcome.append(exc)

    nursery.start_soon(waiting_commit)
    await trio.sleep(1)
    assert outcome == []
    # r2 says hello: its history proves a node was promoted from the master's.
    assert master.address is not None
    attach = run_attach(nursery, r2, master.address)
    with pytest.raises(hakit.HAProtocolError, match="promoted from this master's history"):
        await attach.wait()
    await wait_until(lambda: bool(outcome))
    (error,) = outcome
    assert isinstance(error, hakit.CommitFailedError) and error.txid == 2
    assert master.role is hakit.Role.STANDALONE
    assert master.generation == 2  # persisted: it knows its history was superseded
    with pytest.raises(hakit.NotMasterError):
        await commit(master, after="step-down")
    assert master.statistics().commit_failures == 1


async def test_a_deposed_sqlite_master_stays_deposed_after_a_restart(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    path = tmp_path / "m.db"
    master = await nodes.add("m", storage=hakit.SqliteStorage(path))
    master.set_master_params(MasterParams())
    assert master.address is not None
    r1 = await nodes.add("r1")
    run = run_attach(nursery, r1, master.address)
    await master.attach_replica(timeout=5)
    await commit(master, x=1)
    await cut_off(r1, run)
    r1.set_master_params(MasterParams())
    r1.stop_master()
    with pytest.raises(hakit.HAProtocolError):
        await run_attach(nursery, r1, master.address).wait()
    assert master.role is hakit.Role.STANDALONE
    await master.aclose()
    restarted = await nodes.open("m2", storage=hakit.SqliteStorage(path))
    assert restarted.generation == 2
    with pytest.raises(hakit.NotMasterError):
        await commit(restarted, x="stale write")


async def test_frames_after_kill_master_in_the_same_read_are_ignored(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    # A fake promoter sends KILL_MASTER and more frames in one write: the old master must
    # hand over and carry on, not crash on the frames that follow the kill.
    master, _, _ = await master_with_replicas(nodes, nursery)
    await commit(master, x=1)
    assert master.address is not None
    network = nodes.cluster.network if nodes.cluster else None
    stream = await connect(master.address, network=network, source="promoter")
    framed = FramedStream(stream)
    history = [list(entry) for entry in master.storage.history]
    hello = m.Hello(1, PROTOCOL_VERSION, "hakit", "p", 1, 1, int(m.HelloFlags.FORCE_MASTER),
                    None, history)  # fmt: skip
    await framed.send(hello.encode())
    welcome = parse_message((await framed.receive())[0])
    assert isinstance(welcome, m.Welcome) and welcome.sync == m.SyncKind.EQUAL
    await framed.send(m.Ack(1, 1).encode() + m.PromoteRequest(1).encode())
    ready: m.Message | None = None
    while not isinstance(ready, m.PromoteReady):
        for value in await framed.receive():
            ready = parse_message(value)
    await framed.send(m.KillMaster(2, "p", None).encode() + m.Ack(2, 1).encode() * 3)
    killed: m.Message | None = None
    while not isinstance(killed, m.MasterKilled):
        for value in await framed.receive():
            killed = parse_message(value)
    await framed.aclose()
    await wait_until(lambda: master.role is hakit.Role.STANDALONE)
    assert master.generation == 2
    # The node is alive and answers as a stepped-down master.
    with pytest.raises(hakit.NotMasterError):
        await commit(master, x=2)
    assert master.get("x") == 1
    reply = await raw_hello(nodes, master.address, node="later")
    assert isinstance(reply, m.Reject) and "not a master" in reply.detail


async def test_a_deposed_master_that_keeps_writing_is_repromoted_past_the_new_generation(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    # torture F2 (seed 27): with disable_writes_on_kill=False the deposed master did not
    # persist the generation it saw, so set_master_params made it a second master of it.
    params = MasterParams(disable_writes_on_kill=False)
    master, (r1,), (run1,) = await master_with_replicas(nodes, nursery, "r1", params=params)
    r1.cancel()
    await run1.wait()
    force = ReplicaParams(mode=hakit.ReplicaMode.FORCE_MASTER)
    assert master.address is not None
    assert await r1.attach_master(master.address, force) is hakit.StopReason.BECOMES_MASTER
    await wait_until(lambda: master.role is hakit.Role.STANDALONE)
    assert master.generation == 2  # it saw generation 2 and remembers it
    result = await commit(master, local=1)
    assert result.generation == 1 and result.history != r1.history_id  # still its own
    # Promoting it again would make it the newest master without r1's writes: only forced.
    with pytest.raises(hakit.LocalProtocolError, match="force=True"):
        master.set_master_params(params)
    master.set_master_params(params, force=True)
    assert (master.generation, r1.generation) == (3, 2)
    assert master.history_id not in (r1.history_id, result.history)


async def test_a_deposed_master_is_promoted_again_only_after_resyncing(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    # Re-promoting a master that handed over would make it the newest master without the
    # new master's acknowledged writes (torture: re-promotion schedules lost them).
    master, (r1,), (run1,) = await master_with_replicas(nodes, nursery, "r1")
    r1.cancel()
    await run1.wait()
    force = ReplicaParams(mode=hakit.ReplicaMode.FORCE_MASTER)
    assert master.address is not None
    assert await r1.attach_master(master.address, force) is hakit.StopReason.BECOMES_MASTER
    await wait_until(lambda: master.role is hakit.Role.STANDALONE)
    acked = await commit(r1, only_on_r1=1)
    with pytest.raises(hakit.LocalProtocolError, match="attach it to the current master"):
        master.set_master_params(MasterParams())
    assert master.role is hakit.Role.STANDALONE and master.generation == 2
    # Once it has resynced from the new master it may be promoted again, losing nothing.
    assert r1.address is not None
    run = run_attach(nursery, master, r1.address)
    await r1.attach_replica(timeout=5)
    master.cancel()
    await run.wait()
    master.set_master_params(MasterParams())
    assert master.get("only_on_r1") == 1 and acked.acked == ()
    assert master.generation == 3


async def test_a_node_promoted_beside_the_master_rejoins_it_only_by_giving_up_its_branch(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    # torture F5 (seeds 1934, 102178): a node promoted by hand beside the master reaches a
    # newer generation on a branch of its own. The master may not take that number as proof
    # (anyone can send one), so it refuses the node, and nothing could ever bring it back.
    # FORCE_SYNC is its operator's way back: the node gives up its branch and its generation.
    master, (r1,), (run1,) = await master_with_replicas(nodes, nursery, "r1")
    await commit(master, shared=1)
    r1.cancel()
    await run1.wait()
    force = ReplicaParams(mode=hakit.ReplicaMode.FORCE_MASTER)
    assert master.address is not None
    assert await r1.attach_master(master.address, force) is hakit.StopReason.BECOMES_MASTER
    await wait_until(lambda: master.role is hakit.Role.STANDALONE)
    await commit(r1, on_r1=1)
    master.set_master_params(MasterParams(), force=True)  # the operator's hand promotion
    await commit(master, only_on_m=1)
    assert (master.generation, r1.generation) == (3, 2)
    master.stop_master()  # the operator picks r1 as the master after all
    assert r1.address is not None
    with pytest.raises(hakit.HAProtocolError, match="attach with FORCE_SYNC") as refused:
        await master.attach_master(r1.address)
    assert refused.value.stop_reason is hakit.StopReason.HANDSHAKE_FAILED
    assert r1.role is hakit.Role.MASTER and r1.generation == 2  # not deposed by the number

    run = run_attach(nursery, master, r1.address, ReplicaParams(mode=hakit.ReplicaMode.FORCE_SYNC))
    info = await r1.attach_replica(timeout=5)
    assert info.sync == "full"
    assert dict(master.items()) == dict(r1.items()) == {"shared": 1, "on_r1": 1}
    assert (master.generation, master.storage.generation) == (2, 2)
    assert master.history_id == r1.history_id
    (kept,) = master.discarded()
    assert (kept.master, kept.first_txid, kept.last_txid) == ("r1", 2, 2)
    assert kept.transactions == (hakit.TransactionRecord(2, 3, [[0, "only_on_m", 1]]),)
    result = await commit(r1, after=1)
    assert result.acked == ("m",) and result.generation == 2
    await wait_until(lambda: master.get("after") == 1)
    master.cancel()
    await run.wait()
    # It rejoined as an ordinary replica: a later attach is incremental or equal, not refused.
    run = run_attach(nursery, master, r1.address)
    assert (await r1.attach_replica(timeout=5)).sync in ("equal", "incremental")
    master.cancel()
    await run.wait()
