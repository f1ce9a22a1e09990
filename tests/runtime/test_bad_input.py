"""Bad input gets a clear error and loses nothing; the master keeps serving its replicas."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
from trio.testing import MockClock

import hakit
from hakit import MasterParams, StopReason
from hakit.protocol import PROTOCOL_VERSION, FrameDecoder, encode_frame, parse_message
from hakit.protocol import _messages as m
from hakit.transports import FramedStream, connect

from .conftest import Nodes, commit, run_attach, wait_until


async def healthy_pair(
    nodes: Nodes, nursery: trio.Nursery, params: MasterParams | None = None
) -> tuple[hakit.Node, hakit.Node]:
    master = await nodes.add("m")
    master.set_master_params(params or MasterParams())
    replica = await nodes.add("r1")
    run_attach(nursery, replica, master.address)
    await master.attach_replica(timeout=5)
    await commit(master, before=1)
    return master, replica


async def still_serving(master: hakit.Node, replica: hakit.Node) -> None:
    """The healthy replica still gets and acknowledges every write; nothing was lost."""
    result = await commit(master, after=2)
    assert result.acked == ("r1",)
    assert dict(replica.items()) == dict(master.items()) == {"before": 1, "after": 2}
    assert master.role is hakit.Role.MASTER


async def raw(nodes: Nodes, address: str) -> trio.abc.Stream:
    network = nodes.cluster.network if nodes.cluster else None
    return await connect(address, network=network, source="attacker")


def hello(**overrides: object) -> bytes:
    fields: dict[str, object] = dict(
        generation=0,
        version=PROTOCOL_VERSION,
        cluster="hakit",
        node="x",
        txid=0,
        last_generation=0,
        flags=0,
        address=None,
    )
    fields.update(overrides)
    return m.Hello(**fields).encode()  # type: ignore[arg-type]


async def refused_detail(master: hakit.Node) -> str:
    await wait_until(lambda: bool(master.events.of_type(hakit.ConnectionRefused)))
    event = master.events.of_type(hakit.ConnectionRefused)[-1]
    assert isinstance(event, hakit.ConnectionRefused)
    return event.detail


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x00\x00\x00\x03\xc1\xc1\xc1", "not valid msgpack"),
        (b"\xff\xff\xff\xff" + b"x" * 100, "exceeds the maximum"),
        (b"\x00\x00\x00\x02\x92\x01", "not valid msgpack"),
        (b"\x00\x00\x00\x01\x05", "not a message array"),
        (b"\x00\x00\x00\x04" + b"\x93\x63\x00\x00", "unknown message kind"),
    ],
    ids=["garbage", "oversized", "short-array", "not-a-message", "unknown-kind"],
)
async def test_garbage_is_refused_and_master_keeps_serving(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery, payload: bytes, expected: str
) -> None:
    master, replica = await healthy_pair(nodes, nursery)
    stream = await raw(nodes, master.address)
    await stream.send_all(payload)
    assert expected in await refused_detail(master)
    await still_serving(master, replica)
    await stream.aclose()


async def test_truncated_frame_is_refused(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master, replica = await healthy_pair(nodes, nursery)
    stream = await raw(nodes, master.address)
    await stream.send_all(hello()[:10])
    await stream.aclose()
    assert "middle of a frame" in await refused_detail(master)
    await still_serving(master, replica)


async def test_silent_connection_times_out(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master, replica = await healthy_pair(nodes, nursery, MasterParams(initial_timeout=1.0))
    stream = await raw(nodes, master.address)
    assert "no handshake in time" in await refused_detail(master)
    await still_serving(master, replica)
    await stream.aclose()


async def reply_to(nodes: Nodes, address: str, data: bytes) -> m.Message:
    async with FramedStream(await raw(nodes, address)) as framed:
        await framed.send(data)
        values = await framed.receive()
    return parse_message(values[0])


async def test_wrong_protocol_version(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master, replica = await healthy_pair(nodes, nursery)
    reply = await reply_to(nodes, master.address, hello(version=99))
    assert isinstance(reply, m.Reject)
    assert reply.stop_reason == StopReason.HANDSHAKE_FAILED
    assert "protocol version 99" in reply.detail
    await still_serving(master, replica)


async def test_a_second_replica_of_the_same_name_waits_for_the_first_to_go(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    # Usually the same replica restarted before the master saw its old link end: it is not
    # refused for good. It waits and tries again, and gives up at its timeout saying why;
    # the attached replica is never cut off for it. Once the old link is gone, it gets in.
    master, replica = await healthy_pair(nodes, nursery)
    twin = hakit.Node("r1", network=nodes.cluster.network if nodes.cluster else None)
    await nodes.nursery.start(twin._main)
    with pytest.raises(hakit.NetworkTimeoutError) as info:
        await twin.attach_master(master.address, timeout=2)
    assert "already attached" in str(info.value)
    await still_serving(master, replica)
    attach = run_attach(nursery, twin, master.address, timeout=30)
    await trio.sleep(3)
    assert not attach.done.is_set()  # still waiting its turn
    await replica.aclose()  # the first one goes: its link ends
    info2 = await master.attach_replica(timeout=30)
    assert info2.name == "r1"
    result = await commit(master, later=3)
    assert result.acked == ("r1",)
    assert twin.get("later") == 3 and twin.get("before") == 1
    assert master.role is hakit.Role.MASTER


async def test_one_replica_too_many(nodes: Nodes, clock: MockClock, nursery: trio.Nursery) -> None:
    master, replica = await healthy_pair(nodes, nursery, MasterParams(max_replicas=1))
    extra = await nodes.add("r2")
    with pytest.raises(hakit.HAProtocolError) as info:
        await extra.attach_master(master.address)
    assert info.value.stop_reason is StopReason.HANDSHAKE_FAILED
    assert "maximum number of replicas" in str(info.value)
    assert extra.role is hakit.Role.STANDALONE and extra.txid == 0
    await still_serving(master, replica)


async def test_not_a_master(nodes: Nodes, clock: MockClock) -> None:
    plain = await nodes.add("plain")
    other = await nodes.add("other")
    # It may become one: the replica waits for that until its timeout, then says what it saw.
    with pytest.raises(hakit.NetworkTimeoutError, match="answered: node 'plain' is not a master"):
        await other.attach_master(plain.address, timeout=2)


async def test_attached_replica_sending_garbage_loses_only_its_link(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master, replica = await healthy_pair(nodes, nursery)
    async with FramedStream(await raw(nodes, master.address)) as framed:
        await framed.send(hello(node="rogue"))
        values = await framed.receive()
        assert isinstance(parse_message(values[0]), m.Welcome)
        await framed.send(b"\x00\x00\x00\x03\xc1\xc1\xc1")
        await wait_until(lambda: "rogue" not in master.replicas)
    detached = [e for e in master.events.of_type(hakit.ReplicaDetached) if e.replica == "rogue"]
    assert detached and detached[-1].reason is StopReason.CONNECTION_ABORTED
    assert "msgpack" in detached[-1].detail
    await still_serving(master, replica)


Serve = Callable[[trio.abc.Stream], Awaitable[None]]


async def fake_master(nodes: Nodes, nursery: trio.Nursery, serve: Serve) -> str:
    from hakit.transports import open_listener

    address = "mem:fake" if nodes.cluster else "127.0.0.1:0"
    listener, bound = await open_listener(
        address, network=nodes.cluster.network if nodes.cluster else None
    )

    async def accept() -> None:
        async with listener:
            stream = await listener.accept()
            async with stream:
                await serve(stream)

    nursery.start_soon(accept)
    return bound


async def test_replica_survives_a_master_sending_garbage(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    async def serve(stream: trio.abc.Stream) -> None:
        await stream.receive_some(1000)
        await stream.send_all(b"\x00\x00\x00\x03\xc1\xc1\xc1")
        await trio.sleep(1)

    address = await fake_master(nodes, nursery, serve)
    replica = await nodes.add("r1")
    with pytest.raises(hakit.HAIOError) as info:
        await replica.attach_master(address)
    assert info.value.stop_reason is StopReason.CONNECTION_ABORTED
    assert "msgpack" in str(info.value)
    assert replica.role is hakit.Role.STANDALONE


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        (b"\x00\x00\x00\x03\xc1\xc1\xc1", hakit.HAIOError, "could not reach cancel point"),
        (m.Reject(0, 0, "not mine").encode(), hakit.HAIOError, "refused: not mine"),
        (encode_frame([99, 0]), hakit.HAIOError, "answered with garbage"),
        (b"", hakit.NetworkTimeoutError, r"did not answer within 2 s"),
    ],
    ids=["undecodable", "refused", "unknown-message", "silent"],
)
async def test_cancel_reports_a_bad_cancel_point(
    nodes: Nodes,
    clock: MockClock,
    nursery: trio.Nursery,
    answer: bytes,
    error: type[hakit.HakitError],
    match: str,
) -> None:
    async def serve(stream: trio.abc.Stream) -> None:
        await stream.receive_some(1000)
        if answer:
            await stream.send_all(answer)
        await trio.sleep(10)

    address = await fake_master(nodes, nursery, serve)
    with pytest.raises(error, match=match) as info:
        await hakit.cancel(address, timeout=2, cluster=nodes.cluster)
    assert info.value.stop_reason is StopReason.CANCELLED  # type: ignore[attr-defined]
    assert info.value.address == address  # type: ignore[attr-defined]


async def test_cancel_with_nothing_listening(nodes: Nodes, clock: MockClock) -> None:
    address = "mem:nobody" if nodes.cluster else "127.0.0.1:1"
    with pytest.raises(hakit.HAIOError, match=f"could not reach cancel point {address}"):
        await hakit.cancel(address, timeout=2, cluster=nodes.cluster)


async def test_replica_rejects_a_stale_master_stream(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    async def serve(stream: trio.abc.Stream) -> None:
        decoder = FrameDecoder()
        decoder.feed(await stream.receive_some(1000))
        await stream.send_all(m.Welcome(5, "fake", 0, int(m.SyncKind.EQUAL), 1.0).encode())
        # A transaction that does not follow on from txid 0: a gap in the history.
        await stream.send_all(m.encode_txns(5, [m.pack_entry(7, 5, [[0, "k", 1]])]))
        await trio.sleep(1)

    address = await fake_master(nodes, nursery, serve)
    replica = await nodes.add("r1")
    reason = await replica.attach_master(address)
    assert reason is StopReason.CONNECTION_ABORTED
    assert "does not follow" in replica.events.of_type(hakit.ReplicaStopped)[-1].detail
    assert replica.txid == 0 and replica.get("k") is None


async def test_half_loaded_snapshot_is_never_exposed(
    nodes: Nodes, nursery: trio.Nursery, clock: MockClock
) -> None:
    async def serve(stream: trio.abc.Stream) -> None:
        await stream.receive_some(1000)
        await stream.send_all(m.Welcome(3, "fake", 9, int(m.SyncKind.FULL), 1.0).encode())
        await stream.send_all(m.SnapshotBegin(3, 9, 3, 4).encode())
        await stream.send_all(m.SnapshotChunk(3, ["x", 1, "y", 2]).encode())
        for _ in range(20):  # alive, but the snapshot never finishes
            await stream.send_all(m.KeepAlive(3, 9).encode())
            await trio.sleep(0.2)

    address = await fake_master(nodes, nursery, serve)
    replica = await nodes.add("r1")
    async with replica.transaction() as tx:
        tx.put("mine", 1)
    seen: list[hakit.Notification] = []
    params = hakit.ReplicaParams(
        initial_timeout=1.0, wait_data_timeout=0.5, on_notification=lambda w, _: seen.append(w)
    )
    reason = await replica.attach_master(address, params)
    assert reason is StopReason.CONNECTION_ABORTED
    assert "initial_timeout" in replica.events.of_type(hakit.ReplicaStopped)[-1].detail
    assert hakit.Notification.DB_LOAD_FAILED in seen
    assert dict(replica.items()) == {"mine": 1}
    assert replica.txid == 1
