"""The cluster secret on every link: replication, channels and cancel points."""

from __future__ import annotations

import warnings

import pytest
import trio
from trio.testing import MockClock

import hakit
from hakit import MasterParams, ReplicaMode, ReplicaParams, StopReason
from hakit._runtime._security import Security, warn_if_exposed
from hakit.protocol import FrameDecoder, Kind
from hakit.protocol import _auth as auth
from hakit.transports import connect

from .conftest import Nodes, commit, run_attach, wait_until
from .test_bad_input import hello

SECRET = b"a cluster secret for the tests"
OTHER = b"another cluster secret entirely"


async def secured_master(nodes: Nodes, secret: bytes | None = SECRET) -> hakit.Node:
    master = await nodes.open("m", secret=secret)
    master.set_master_params(MasterParams())
    await commit(master, before=1)
    return master


async def read_all(stream: trio.abc.Stream) -> bytes:
    """Everything the peer sends until it closes (then this side closes too)."""
    data = b""
    async with stream:
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    return data


def frames(data: bytes) -> list[object]:
    decoder = FrameDecoder()
    decoder.feed(data)
    return decoder.drain()


def refused(master: hakit.Node) -> list[str]:
    return [e.detail for e in master.events.of_type(hakit.ConnectionRefused)]


async def test_nodes_sharing_the_secret_replicate_talk_and_cancel(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await secured_master(nodes)
    replica = await nodes.open("r1", secret=SECRET)

    async def pong(msg: hakit.ChannelMessage) -> None:
        await msg.respond(b"pong")

    master.set_msg_dispatch(pong)
    cancel_at = "mem:r1-cancel" if nodes.cluster else "127.0.0.1:0"
    if not nodes.cluster:
        async with hakit.open_node("probe", address="127.0.0.1:0") as probe:
            cancel_at = probe.address
    run = run_attach(
        nursery, replica, master.address,
        ReplicaParams(mode=ReplicaMode.ALLOW_CANCEL, cancel_address=cancel_at),
    )  # fmt: skip
    await master.attach_replica(timeout=5)
    result = await commit(master, after=2)
    assert result.acked == ("r1",)
    assert dict(replica.items()) == {"before": 1, "after": 2}
    assert await replica.channel(master.address).send_request(b"ping", timeout=5) == b"pong"
    await hakit.cancel(cancel_at, secret=SECRET, cluster=nodes.cluster)
    assert await run.wait() is StopReason.CANCELLED
    assert refused(master) == []


@pytest.mark.parametrize(
    ("master_secret", "replica_secret", "why"),
    [
        (SECRET, None, "requires the cluster secret"),
        (SECRET, OTHER, "cluster secrets differ"),
        (None, SECRET, "the accepting node none"),
    ],
)
async def test_a_replica_without_the_right_secret_fails_the_handshake(
    nodes: Nodes,
    clock: MockClock,
    nursery: trio.Nursery,
    master_secret: bytes | None,
    replica_secret: bytes | None,
    why: str,
) -> None:
    master = await secured_master(nodes, master_secret)
    stranger = await nodes.open("stranger", secret=replica_secret)
    with pytest.raises(hakit.HAProtocolError, match=why) as caught:
        await stranger.attach_master(master.address, timeout=5)
    assert caught.value.stop_reason is StopReason.HANDSHAKE_FAILED
    assert stranger.txid == 0 and stranger.items() == []
    [event] = stranger.events.of_type(hakit.ReplicaStopped)
    assert event.reason is StopReason.HANDSHAKE_FAILED
    assert any(why in detail for detail in refused(master))
    # The master is unharmed and still serves a replica that knows the secret.
    replica = await nodes.open("r1", secret=master_secret)
    run_attach(nursery, replica, master.address)
    await master.attach_replica(timeout=5)
    assert dict(replica.items()) == {"before": 1}


async def test_a_channel_or_cancel_without_the_secret_is_refused(
    nodes: Nodes, clock: MockClock
) -> None:
    master = await secured_master(nodes)

    async def leak(msg: hakit.ChannelMessage) -> None:
        await msg.respond(b"secret data")

    master.set_msg_dispatch(leak)
    stranger = await nodes.open("stranger")
    with pytest.raises(hakit.UnavailableError, match="requires the cluster secret"):
        await stranger.channel(master.address).send_request(b"ping", timeout=5)
    liar = await nodes.open("liar", secret=OTHER)
    with pytest.raises(hakit.UnavailableError, match="cluster secrets differ"):
        await liar.channel(master.address).send_request(b"ping", timeout=5)
    with pytest.raises(hakit.HAProtocolError, match="requires the cluster secret") as caught:
        await hakit.cancel(master.address, cluster=nodes.cluster, timeout=5)
    assert caught.value.stop_reason is StopReason.HANDSHAKE_FAILED
    with pytest.raises(hakit.HAProtocolError, match="cluster secrets differ"):
        await hakit.cancel(master.address, cluster=nodes.cluster, secret=OTHER, timeout=5)
    assert len(refused(master)) == 4


async def test_a_stranger_receives_nothing_but_the_refusal(nodes: Nodes, clock: MockClock) -> None:
    master = await secured_master(nodes)
    network = nodes.cluster.network if nodes.cluster else None
    # 1. It speaks the replication protocol without authenticating: one REJECT, generation 0.
    stream = await connect(master.address, network=network, source="stranger")
    await stream.send_all(hello(node="stranger"))
    data = await read_all(stream)
    assert frames(data) == [[Kind.REJECT, 0, StopReason.HANDSHAKE_FAILED, auth.SECRET_REQUIRED]]
    for leak in (b"hakit", b"m", b"before"):  # no cluster name, node name or data
        assert leak not in data.replace(auth.SECRET_REQUIRED.encode(), b"")
    # 2. It tries to authenticate with a wrong secret: a random challenge, then the refusal.
    stream = await connect(master.address, network=network, source="stranger")
    client = auth.ClientAuth(OTHER, b"\x01" * auth.NONCE_SIZE)
    await stream.send_all(client.hello())
    decoder = FrameDecoder()
    while not (got := decoder.drain()):
        decoder.feed(await stream.receive_some(65536))
    [challenge] = got
    assert challenge[:2] == [auth.AuthKind.AUTH_CHALLENGE, 0] and len(challenge) == 3
    step = client.receive(challenge)
    assert step.send is not None
    await stream.send_all(step.send)
    assert frames(await read_all(stream)) == [[auth.AuthKind.AUTH_FAIL, 0, auth.WRONG_SECRET]]
    assert master.role is hakit.Role.MASTER


async def test_a_recorded_handshake_cannot_be_replayed(nodes: Nodes, clock: MockClock) -> None:
    master = await secured_master(nodes)
    network = nodes.cluster.network if nodes.cluster else None
    # A genuine client authenticates; everything it sends is recorded.
    sent = b""
    stream = await connect(master.address, network=network, source="r1")
    client = auth.ClientAuth(SECRET, b"\x02" * auth.NONCE_SIZE)
    sent += client.hello()
    await stream.send_all(client.hello())
    decoder = FrameDecoder()
    done = False
    while not done:
        decoder.feed(await stream.receive_some(65536))
        for value in decoder.drain():
            step = client.receive(value)
            assert step.failed is None
            if step.send is not None:
                sent += step.send
                await stream.send_all(step.send)
            done = step.done
    await stream.aclose()
    # The recording, replayed as one burst on a new connection, meets a fresh challenge.
    stream = await connect(master.address, network=network, source="attacker")
    await stream.send_all(sent)
    got = frames(await read_all(stream))
    assert [value[0] for value in got] == [auth.AuthKind.AUTH_CHALLENGE, auth.AuthKind.AUTH_FAIL]
    assert got[-1][2] == auth.WRONG_SECRET
    await wait_until(lambda: auth.WRONG_SECRET in refused(master))


async def test_a_cluster_secret_covers_every_node_of_the_cluster(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    async with hakit.open_cluster(seed=3, secret=SECRET) as cluster:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams())
        replica = await cluster.add_node("r1")
        run_attach(nursery, replica, "mem:m")
        await master.attach_replica(timeout=5)
        # A node of the same network without the secret is refused.
        outsider = hakit.Node("outsider", network=cluster.network)
        await nursery.start(outsider._main)
        with pytest.raises(hakit.HAProtocolError, match="requires the cluster secret"):
            await outsider.attach_master("mem:m", timeout=5)
        await outsider.aclose()


def test_bad_secrets_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        hakit.Node("n", secret="short")
    with pytest.raises(TypeError, match="bytes or str"):
        hakit.Node("n", secret=12345678901234567)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="TlsConfig"):
        hakit.Node("n", tls="tls")  # type: ignore[arg-type]


def test_a_node_without_secret_warns_when_reachable_beyond_loopback() -> None:
    open_ = Security()
    with pytest.warns(hakit.InsecureListenerWarning, match="without a cluster secret"):
        assert warn_if_exposed("n", "0.0.0.0:7000", open_)
    with pytest.warns(hakit.InsecureListenerWarning):
        assert warn_if_exposed("n", "[::]:7000", open_)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for bound in ("127.0.0.1:7000", "localhost:1", "[::1]:7000", "/tmp/s", "mem:a"):
            assert not warn_if_exposed("n", bound, open_)
        assert not warn_if_exposed("n", "0.0.0.0:7000", Security(secret=SECRET))
