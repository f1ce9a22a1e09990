"""What a peer may cost a node (`NodeLimits`): each limit ends only the offending connection."""

from __future__ import annotations

import errno
from contextlib import suppress
from typing import Any

import pytest
import trio
import trio.testing

import hakit
from hakit import ChannelMessage, MasterParams, NodeLimits
from hakit._runtime import _node
from hakit.protocol import _messages as m
from hakit.protocol._codec import frame
from hakit.transports import FramedStream, connect

from .conftest import Nodes, commit, run_attach, wait_until


def addr(node: hakit.Node) -> str:
    assert node.address is not None
    return node.address


async def raw(nodes: Nodes, node: hakit.Node) -> trio.abc.Stream:
    network = nodes.cluster.network if nodes.cluster else None
    return await connect(addr(node), network=network, source="attacker")


async def channel_peer(nodes: Nodes, node: hakit.Node) -> FramedStream:
    """A raw connection past the channel hello: whatever it sends next is channel traffic."""
    framed = FramedStream(await raw(nodes, node))
    await framed.send(m.ChannelHello(0, "raw", "hakit", m.PROTOCOL_VERSION).encode())
    (hello,) = await framed.receive()
    assert isinstance(m.parse_message(hello), m.ChannelHello)
    return framed


async def closed_by_peer(stream: trio.abc.Stream) -> bool:
    """Whether the other end closed `stream` (it reads EOF, or a reset)."""
    try:
        while True:
            if not await stream.receive_some(65536):
                return True
    except (trio.BrokenResourceError, OSError):
        return True


def disconnect_details(node: hakit.Node) -> list[str]:
    return [e.describe() for e in node.events.of_type(hakit.ChannelDisconnected)]


def refusals(node: hakit.Node) -> list[str]:
    return [e.detail for e in node.events.of_type(hakit.ConnectionRefused)]  # type: ignore[attr-defined]


async def echo(msg: ChannelMessage) -> None:
    if msg.need_response:
        await msg.respond(*msg.parts)


def test_limits_are_validated() -> None:
    with pytest.raises(hakit.InvalidArgumentError, match="max_connections"):
        NodeLimits(max_connections=0)
    with pytest.raises(hakit.InvalidArgumentError, match="frame_timeout"):
        NodeLimits(frame_timeout=0)
    with pytest.raises(hakit.InvalidArgumentError, match="expected NodeLimits"):
        hakit.Node("n", limits=3)  # type: ignore[arg-type]


# -- accepting ---------------------------------------------------------------------------------


class FailingListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose accept fails `failures` times with `error`, then works."""

    def __init__(self, inner: trio.abc.Listener[trio.abc.Stream], failures: int, error: int):
        self.inner = inner
        self.failures = failures
        self.error = error

    async def accept(self) -> trio.abc.Stream:
        if self.failures:
            self.failures -= 1
            await trio.lowlevel.checkpoint()
            raise OSError(self.error, "simulated accept failure")
        return await self.inner.accept()

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("error", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ECONNRESET])
async def test_accept_errors_back_off_and_the_node_goes_on(
    nodes: Nodes,
    clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    error: int,
) -> None:
    real = _node.open_listener

    async def failing(*args: Any, **kwargs: Any) -> tuple[Any, str]:
        listener, bound = await real(*args, **kwargs)
        return FailingListener(listener, 5, error), bound

    monkeypatch.setattr(_node, "open_listener", failing)
    master = await nodes.add("m", limits=NodeLimits())
    master.set_master_params(MasterParams())
    replica = await nodes.add("r1")
    run_attach(nursery, replica, addr(master))
    await master.attach_replica(timeout=30)
    assert (await commit(master, k=1)).acked == ("r1",)
    failed = [d for d in refusals(master) if "accept failed" in d]
    assert len(failed) == 5
    assert errno.errorcode[error] in failed[0]


async def test_a_listener_closes_connections_past_its_limit(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    b = await nodes.add("b", limits=NodeLimits(max_connections=2))
    b.set_msg_dispatch(echo)
    first, second = await raw(nodes, b), await raw(nodes, b)
    third = await raw(nodes, b)
    assert await closed_by_peer(third)
    await third.aclose()
    assert "too many connections" in refusals(b)[-1]
    assert "NodeLimits.max_connections" in refusals(b)[-1]
    await first.aclose()
    await second.aclose()
    # Once the silent ones are gone (the handshake timeout, at the latest), room again.
    a = await nodes.add("a")
    with trio.fail_after(60):
        while True:
            try:
                assert await a.channel(addr(b)).send_request(b"hi") == b"hi"
                break
            except hakit.UnavailableError:
                await trio.sleep(1)


# -- decoding ----------------------------------------------------------------------------------


async def test_a_large_first_frame_is_refused_before_it_is_read(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    b = await nodes.add("b")
    stream = await raw(nodes, b)
    await stream.send_all((1024 * 1024).to_bytes(4, "big"))  # a 1 MiB "hello"
    assert await closed_by_peer(stream)
    await stream.aclose()
    assert "exceeds the maximum of 65536" in refusals(b)[-1]


def nested_empty_arrays(outer: int, inner: int) -> bytes:
    """One msgpack value: an array of `outer` arrays of `inner` empty arrays."""
    one = b"\xdd" + inner.to_bytes(4, "big") + b"\x90" * inner
    return b"\xdd" + outer.to_bytes(4, "big") + one * outer


async def test_a_channel_frame_of_many_small_arrays_is_refused_cheaply(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    a, b = await nodes.add("a"), await nodes.add("b")
    b.set_msg_dispatch(echo)
    framed = await channel_peer(nodes, b)
    # 1 MiB that msgpack would turn into 64 MB of empty lists.
    await framed.send(frame(nested_empty_arrays(16, 65536)))
    assert await closed_by_peer(framed.stream)
    await framed.aclose()
    assert "more than 16 arrays and maps" in disconnect_details(b)[-1]
    assert await a.channel(addr(b)).send_request(b"ok") == b"ok"


# -- channel connections -----------------------------------------------------------------------


async def test_channel_connections_past_the_limit_are_refused(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    a, b = await nodes.add("a"), await nodes.add("b", limits=NodeLimits(max_channel_connections=1))
    b.set_msg_dispatch(echo)
    held = await channel_peer(nodes, b)
    with pytest.raises(hakit.UnavailableError, match="too many channel connections"):
        await a.channel(addr(b)).send_request(b"x")
    await held.aclose()
    await wait_until(lambda: b.statistics().channels.incoming_connections == 0)
    assert await a.channel(addr(b)).send_request(b"x") == b"x"


async def test_an_idle_channel_connection_is_closed_and_the_requester_reconnects(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    a = await nodes.add("a")
    b = await nodes.add("b", limits=NodeLimits(channel_idle_timeout=60))
    b.set_msg_dispatch(echo)
    ch = a.channel(addr(b))
    assert await ch.send_request(b"1") == b"1"
    await trio.sleep(59)
    assert b.statistics().channels.incoming_connections == 1
    await trio.sleep(60)
    assert b.statistics().channels.incoming_connections == 0
    assert "idle for 60 s" in disconnect_details(b)[-1]
    assert await ch.send_request(b"2") == b"2"  # a new connection


async def test_a_frame_stalled_half_way_is_timed_out(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    a = await nodes.add("a")
    b = await nodes.add("b", limits=NodeLimits(frame_timeout=10))
    b.set_msg_dispatch(echo)
    framed = await channel_peer(nodes, b)
    await framed.send((1024 * 1024).to_bytes(4, "big") + b"\x00" * 1000)
    with trio.fail_after(30):
        assert await closed_by_peer(framed.stream)
    await framed.aclose()
    assert "did not arrive whole within 10 s" in disconnect_details(b)[-1]
    assert await a.channel(addr(b)).send_request(b"ok") == b"ok"


async def test_unfinished_frames_share_one_budget(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    a = await nodes.add("a")
    b = await nodes.add("b", limits=NodeLimits(receive_budget=150_000))
    b.set_msg_dispatch(echo)
    first, second = await channel_peer(nodes, b), await channel_peer(nodes, b)
    start = (1024 * 1024).to_bytes(4, "big") + b"\x00" * 100_000
    await first.send(start)
    await wait_until(lambda: b.statistics().channels.incoming_connections == 2)
    await trio.sleep(1)
    with suppress(trio.BrokenResourceError):  # over TCP the refusal may reset the send
        await second.send(start)
    assert await closed_by_peer(second.stream)
    await second.aclose()
    assert "exceed the receive budget of 150000 bytes" in disconnect_details(b)[-1]
    assert b.statistics().channels.incoming_connections == 1  # the first one is still there
    await first.aclose()
    assert await a.channel(addr(b)).send_request(b"ok") == b"ok"


# -- handlers ----------------------------------------------------------------------------------


async def test_handlers_per_connection_are_bounded(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    a = await nodes.add("a")
    b = await nodes.add("b", limits=NodeLimits(max_handlers_per_connection=3))
    running = 0
    most = 0

    async def slow(msg: ChannelMessage) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await trio.sleep(1)
        running -= 1
        await msg.respond(msg.parts[0])

    b.set_msg_dispatch(slow)
    ch = a.channel(addr(b))
    answers: dict[int, bytes] = {}

    async def ask(n: int) -> None:
        answers[n] = await ch.send_request(b"%d" % n, timeout=60)

    async with trio.open_nursery() as inner:
        for n in range(10):
            inner.start_soon(ask, n)
    assert answers == {n: b"%d" % n for n in range(10)}
    assert most == 3


async def test_a_requester_leaving_cancels_its_handlers(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    b = await nodes.add("b")
    started = 0
    cancelled = 0

    async def never_answers(msg: ChannelMessage) -> None:
        nonlocal started, cancelled
        started += 1
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled += 1
            raise

    b.set_msg_dispatch(never_answers)
    framed = await channel_peer(nodes, b)
    await framed.send(b"".join(m.ChannelMsg(0, n, 0, 0, [b"x"]).encode() for n in range(1, 101)))
    await wait_until(lambda: started == 100)
    await framed.aclose()
    await wait_until(lambda: cancelled == 100)
    assert b.statistics().channels.incoming_connections == 0
