"""What a replica applies and acknowledges: acks never run ahead of the database, a node being
attached never writes on its own, and a malformed transaction from a master ends the attach
with a stop reason (regressions found by the torture runner, issue 8)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import hakit
from hakit import MasterParams, StopReason
from hakit.protocol import _messages as m
from hakit.protocol import parse_message
from hakit.transports import FramedStream, open_listener

from .conftest import Nodes, commit, run_attach, wait_until

FakeMaster = Callable[[FramedStream, m.Hello], Awaitable[None]]


async def serve_fake_master(nodes: Nodes, nursery: trio.Nursery, behave: FakeMaster) -> str:
    """Listen as a scripted master; `behave` gets each connection after its Hello."""
    network = nodes.cluster.network if nodes.cluster else None
    address = "mem:fake" if network else "127.0.0.1:0"
    listener, bound = await open_listener(address, network=network)

    async def one(stream: trio.abc.Stream) -> None:
        async with FramedStream(stream) as framed:
            (value,) = await framed.receive()
            hello = parse_message(value)
            assert isinstance(hello, m.Hello)
            await behave(framed, hello)

    async def accept_loop() -> None:
        async with listener:
            while True:
                nursery.start_soon(one, await listener.accept())

    nursery.start_soon(accept_loop)
    return bound


def welcome(txid: int, sync: m.SyncKind = m.SyncKind.EQUAL) -> bytes:
    return m.Welcome(1, "fake", txid, int(sync), 0.0).encode()


def txns(*entries: list[Any]) -> bytes:
    return m.Txns(1, list(entries)).encode()


def put(txid: int, key: str, value: Any = 1) -> list[Any]:
    return [txid, 1, [[m.OP_PUT, key, value]]]


async def test_acks_never_run_ahead_of_what_is_applied(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    # One read holding three batches: the replica must acknowledge each batch once it has
    # applied it, never the last txid of the read after applying only the first. The
    # callback refuses txid 2, so a replica that acked ahead would have acked txid 3, which
    # it never held.
    acks: list[int] = []
    held_at_ack: list[int] = []

    async def behave(framed: FramedStream, hello: m.Hello) -> None:
        await framed.send(welcome(0) + txns(put(1, "a")) + txns(put(2, "b")) + txns(put(3, "c")))
        while True:
            try:
                values = await framed.receive()
            except (EOFError, trio.BrokenResourceError):
                return
            for value in values:
                msg = parse_message(value)
                if isinstance(msg, m.Ack):
                    acks.append(msg.txid)
                    held_at_ack.append(replica.txid)

    def refuse_two(record: hakit.TransactionRecord) -> None:
        if record.txid == 2:
            raise RuntimeError("refused")

    address = await serve_fake_master(nodes, nursery, behave)
    replica = await nodes.add("r")
    params = hakit.ReplicaParams(on_transaction=refuse_two)
    reason = await replica.attach_master(address, params, timeout=5)
    assert reason is StopReason.ITERATOR_ERROR
    await wait_until(lambda: replica.txid == 2 and bool(acks))
    assert max(acks) <= replica.txid == 2
    assert all(ack <= held for ack, held in zip(acks, held_at_ack, strict=True))


@pytest.mark.parametrize("transport", ["mem"])  # a hold piles batches into one read
async def test_ack_of_a_sync_commit_means_applied(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    # Concurrent sync commits each leave as their own batch; a hold makes them arrive in one
    # read. When a commit returns acknowledged, the replica must already hold it.
    master = await nodes.add("m")
    master.set_master_params(MasterParams())
    replica = await nodes.add("r")
    run_attach(nursery, replica, master.address)
    await master.attach_replica(timeout=5)
    assert nodes.cluster is not None
    seen: list[tuple[int, int]] = []  # (txid committed, txid the replica held on return)

    async def write(i: int) -> None:
        result = await commit(master, **{f"k{i}": i})
        assert result.acked == ("r",)
        seen.append((result.txid, replica.txid))

    nodes.cluster.network.hold("m", "r")
    for i in range(6):
        nursery.start_soon(write, i)
        await trio.sleep(0.01)  # each commit is sent on its own
    nodes.cluster.network.release("m", "r")
    await wait_until(lambda: len(seen) == 6)
    assert all(held >= txid for txid, held in seen), seen


@pytest.mark.parametrize("transport", ["mem"])  # the handshake is slowed by simulated latency
async def test_write_on_a_node_being_attached_is_refused(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    # A fresh standalone node may write on its own; once attach_master has begun (here the
    # handshake is slowed by latency) its database belongs to the master's history, so a
    # local write must be refused with a hakit error, and the node ends equal to the master.
    master = await nodes.add("m")
    master.set_master_params(MasterParams())
    node = await nodes.add("n")
    await commit(node, own=0)  # allowed: a fresh database, not yet replicated
    assert nodes.cluster is not None
    nodes.cluster.network.set_latency("n", "m", 0.5)
    run_attach(nursery, node, master.address)
    await trio.sleep(0.1)  # the attach has started; the handshake is in flight
    with pytest.raises(hakit.NotMasterError, match="attaching"):
        await commit(node, local=1)
    await master.attach_replica(timeout=5)
    nodes.cluster.network.set_latency("n", "m", 0.0)
    await commit(master, x=2)
    await wait_until(lambda: node.txid == master.txid)
    assert dict(node.items()) == dict(master.items()) == {"x": 2}
    with pytest.raises(hakit.NotMasterError, match="replica"):
        await commit(node, local=1)


async def test_write_racing_the_start_of_an_attach_is_refused(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    # The transaction block was entered before the attach began and commits after it did.
    master = await nodes.add("m")
    master.set_master_params(MasterParams())
    await commit(master, x=1)
    node = await nodes.add("n")
    tx = node.transaction()
    await tx.__aenter__()
    tx.put("local", 1)
    run_attach(nursery, node, master.address)
    await wait_until(lambda: node._session is not None, step=0)
    with pytest.raises(hakit.NotMasterError):
        await tx.__aexit__(None, None, None)
    await master.attach_replica(timeout=5)
    await wait_until(lambda: node.txid == master.txid)
    assert dict(node.items()) == dict(master.items()) == {"x": 1}


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ([1, 1, [[7, "k", 1]]], "unknown op 7"),
        ([1, 1, [[m.OP_PUT, "k"]]], "put op of 2 items"),
        ([1, 1, [[m.OP_DELETE, "k", 1]]], "delete op of 3 items"),
        ([1, 1, [[m.OP_PUT, 5, 1]]], "key 5 is neither str nor bytes"),
        ([1, 1, [5]], "must be a non-empty array"),
        ([1, 1, [[]]], "must be a non-empty array"),
        ([1, 1, [["put", "k", 1]]], "unknown op 'put'"),
        ([1, 1, [[False, "k", 1]]], "unknown op False"),  # a bool is no op tag, even 0's twin
        ([1, 1, [[m.OP_PUT, "k", 1], [m.OP_PUT, None, 1]]], "key None is neither"),
    ],
    ids=[
        "unknown-op",
        "short-put",
        "long-delete",
        "int-key",
        "not-a-list",
        "empty",
        "str-tag",
        "bool-tag",
        "second-op",
    ],
)
async def test_malformed_op_from_a_master_ends_the_attach_with_a_stop_reason(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery, entry: list[Any], expected: str
) -> None:
    async def behave(framed: FramedStream, hello: m.Hello) -> None:
        await framed.send(welcome(0) + txns(entry))
        with trio.move_on_after(10), contextlib.suppress(EOFError, trio.BrokenResourceError):
            await framed.receive()  # until the replica hangs up

    address = await serve_fake_master(nodes, nursery, behave)
    replica = await nodes.add("r")
    reason = await replica.attach_master(address, timeout=5)
    assert reason is StopReason.CONNECTION_ABORTED
    (stopped,) = replica.events.of_type(hakit.ReplicaStopped)
    assert expected in stopped.detail
    assert replica.txid == 0 and replica.items() == []  # nothing of the bad batch applied


async def test_malformed_snapshot_key_from_a_master_ends_the_attach_with_a_stop_reason(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    async def behave(framed: FramedStream, hello: m.Hello) -> None:
        await framed.send(
            welcome(1, m.SyncKind.FULL)
            + m.SnapshotBegin(1, 1, 1, 1).encode()
            + m.SnapshotChunk(1, [3, "v"]).encode()
        )
        with trio.move_on_after(10), contextlib.suppress(EOFError, trio.BrokenResourceError):
            await framed.receive()  # until the replica hangs up

    address = await serve_fake_master(nodes, nursery, behave)
    replica = await nodes.add("r")
    reason = await replica.attach_master(address, timeout=5)
    assert reason is StopReason.CONNECTION_ABORTED
    (stopped,) = replica.events.of_type(hakit.ReplicaStopped)
    assert "neither str nor bytes" in stopped.detail
    assert replica.txid == 0 and replica.items() == []
