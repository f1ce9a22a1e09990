"""The simulated network: partitions, holds, latency, determinism and statistics.

Every timed test runs on trio's `MockClock` with autojump, so "waiting 100 seconds" is
instant and exact.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from hakit.protocol import encode_frame
from hakit.transports import FramedStream, NetworkStatistics, SimulatedNetwork
from hakit.transports._memory import MemoryStream

Pair = tuple[trio.abc.Stream, trio.abc.Stream]


@asynccontextmanager
async def linked(network: SimulatedNetwork, source: str | None, name: str) -> AsyncIterator[Pair]:
    """Listen on `name`, connect from `source`, yield (client, server); then close all three."""
    async with network.listen(name) as listener:
        client = await network.connect(name, source=source)
        server = await listener.accept()
        async with client, server:
            yield client, server


async def nothing_arrives(stream: trio.abc.Stream, wait: float = 100.0) -> bool:
    with trio.move_on_after(wait):
        await stream.receive_some()
        return False
    return True


async def receive_until_eof(stream: trio.abc.Stream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some():
        data += chunk
    return bytes(data)


# -- names ------------------------------------------------------------------------------


async def test_a_name_is_listened_on_once() -> None:
    network = SimulatedNetwork()
    listener = network.listen("a")
    with pytest.raises(OSError, match="already in use") as info:
        network.listen("a")
    assert info.value.errno == errno.EADDRINUSE
    await listener.aclose()
    async with network.listen("a"):
        pass  # free again once closed


async def test_connecting_to_nobody_is_refused() -> None:
    network = SimulatedNetwork()
    with pytest.raises(ConnectionRefusedError, match="mem:ghost"):
        await network.connect("ghost", source="a")


async def test_closing_a_listener_closes_connections_not_yet_accepted() -> None:
    network = SimulatedNetwork()
    listener = network.listen("b")
    async with await network.connect("b", source="a") as client:
        await listener.aclose()
        assert await client.receive_some() == b""
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"x")


async def test_streams_know_the_node_names_at_both_ends() -> None:
    network = SimulatedNetwork()
    async with linked(network, "a", "b") as (client, server):
        assert (client.local_name, client.remote_name) == ("a", "b")  # type: ignore[attr-defined]
        assert (server.local_name, server.remote_name) == ("b", "a")  # type: ignore[attr-defined]
        assert "a" in repr(client)
        assert "b" in repr(network)


# -- partitions --------------------------------------------------------------------------


async def test_partition_holds_bytes_and_heal_delivers_them_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = SimulatedNetwork()
    async with linked(network, "a", "b") as (client, server):
        network.partition("a", "b")
        for piece in (b"one ", b"two ", b"three"):
            await client.send_all(piece)
        await server.send_all(b"back")
        start = trio.current_time()
        assert await nothing_arrives(server)
        assert await nothing_arrives(client)
        assert trio.current_time() - start == pytest.approx(200.0)
        assert network.statistics().bytes_held == len(b"one two three") + len(b"back")

        async def heal_later() -> None:
            await trio.sleep(5)
            network.heal()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(heal_later)
            data = await server.receive_some()  # blocked until the heal wakes it
            assert trio.current_time() - start == pytest.approx(205.0)
        assert data == b"one two three"
        assert await client.receive_some() == b"back"
        assert network.statistics().bytes_held == 0


async def test_a_close_waits_behind_the_cut_like_the_data(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = SimulatedNetwork()
    async with linked(network, "a", "b") as (client, server):
        network.partition("a", "b")
        await client.send_all(b"goodbye")
        await client.aclose()
        # A cut is not a reset: the server can neither read the EOF nor see the link break.
        assert await nothing_arrives(server)
        await server.send_all(b"still talking")
        network.heal()
        assert await receive_until_eof(server) == b"goodbye"
        with pytest.raises(trio.BrokenResourceError):
            await server.send_all(b"now it breaks")


async def test_connecting_across_a_partition_fails() -> None:
    network = SimulatedNetwork()
    async with network.listen("b") as listener:
        network.partition("a", "b")
        with pytest.raises(OSError, match="network partitioned between a and b") as info:
            await network.connect("b", source="a")
        assert not isinstance(info.value, ConnectionRefusedError)
        # The reverse direction and other sources are cut or not by node pair, not order.
        async with listener:
            pass
        async with network.listen("a"):
            with pytest.raises(OSError, match="partitioned"):
                await network.connect("a", source="b")
            async with await network.connect("a", source="c"):
                pass
        network.heal()
    async with linked(network, "a", "b"):
        pass


async def test_anonymous_connections_are_never_partitioned() -> None:
    network = SimulatedNetwork()
    network.partition("a", "b")
    async with linked(network, None, "b") as (client, server):
        network.partition(["a", "x"], ["b", "y"])
        await client.send_all(b"through")
        assert await server.receive_some() == b"through"


async def test_partition_cuts_every_link_between_two_groups(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = SimulatedNetwork()
    async with (
        linked(network, "a", "c") as (a_to_c, c_from_a),
        linked(network, "b", "c2") as (b_to_c2, c2_from_b),
        linked(network, "a", "b") as (a_to_b, b_from_a),
    ):
        network.partition(["a", "b"], {"c", "c2"})
        for stream in (a_to_c, b_to_c2, a_to_b):
            await stream.send_all(b"x")
        assert await nothing_arrives(c_from_a)
        assert await nothing_arrives(c2_from_b)
        assert await b_from_a.receive_some() == b"x"  # same side of the cut
        network.heal()
        assert await c_from_a.receive_some() == b"x"
        assert await c2_from_b.receive_some() == b"x"


async def test_a_node_in_both_groups_keeps_its_own_links() -> None:
    network = SimulatedNetwork()
    async with linked(network, "a", "b") as (client, server):
        network.partition(["a", "b"], ["b"])  # cuts a-b; b-b is not a link
        async with linked(network, "b", "b2"):
            pass
        with pytest.raises(OSError, match="partitioned"):
            await network.connect("b", source="a")
        assert client
        assert server


async def test_bad_names_are_value_errors() -> None:
    network = SimulatedNetwork()
    with pytest.raises(ValueError, match="non-empty"):
        network.partition("", "b")
    with pytest.raises(ValueError, match="non-empty"):
        network.partition(["a", 3], "b")  # type: ignore[list-item]
    with pytest.raises(ValueError, match="itself"):
        network.hold("a", "a")
    with pytest.raises(ValueError, match="non-empty"):
        network.listen("")


# -- holds --------------------------------------------------------------------------------


async def test_hold_and_release_one_pair(autojump_clock: trio.testing.MockClock) -> None:
    network = SimulatedNetwork()
    async with (
        linked(network, "a", "b") as (a_to_b, b_from_a),
        linked(network, "a", "c") as (a_to_c, c_from_a),
    ):
        network.hold("b", "a")
        await a_to_b.send_all(b"held")
        await a_to_c.send_all(b"free")
        assert await c_from_a.receive_some() == b"free"
        assert await nothing_arrives(b_from_a)
        with pytest.raises(OSError, match="held"):
            await network.connect("b", source="a")
        network.heal()  # heal lifts partitions only
        assert await nothing_arrives(b_from_a)
        assert network.statistics().bytes_held == 4
        network.release("a", "b")
        assert await b_from_a.receive_some() == b"held"
        network.release("a", "b")  # releasing what is not held is a no-op


async def test_a_link_held_and_partitioned_needs_both_lifted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = SimulatedNetwork()
    async with linked(network, "a", "b") as (client, server):
        network.hold("a", "b")
        network.partition("a", "b")
        await client.send_all(b"late")
        network.release("a", "b")
        assert await nothing_arrives(server)
        network.heal()
        assert await server.receive_some() == b"late"


# -- latency ------------------------------------------------------------------------------


async def test_latency_delays_each_chunk(autojump_clock: trio.testing.MockClock) -> None:
    network = SimulatedNetwork()
    network.set_latency("a", "b", 0.25)
    assert network.latency("b", "a") == (0.25, 0.0)
    assert network.latency("a", "c") == (0.0, 0.0)
    async with linked(network, "a", "b") as (client, server):
        start = trio.current_time()
        await client.send_all(b"ping")
        assert await server.receive_some() == b"ping"
        assert trio.current_time() - start == pytest.approx(0.25)
        await server.send_all(b"pong")
        assert await client.receive_some() == b"pong"
        assert trio.current_time() - start == pytest.approx(0.5)
        # The end of the stream travels at the same speed.
        await client.aclose()
        assert await server.receive_some() == b""
        assert trio.current_time() - start == pytest.approx(0.75)


async def test_a_cancelled_receive_loses_nothing(autojump_clock: trio.testing.MockClock) -> None:
    network = SimulatedNetwork(latency=(1.0, 0.0))
    async with linked(network, "a", "b") as (client, server):
        await client.send_all(b"patience")
        with trio.move_on_after(0.5):
            await server.receive_some()
        assert await server.receive_some() == b"patience"


async def test_jitter_never_reorders_a_link(autojump_clock: trio.testing.MockClock) -> None:
    network = SimulatedNetwork(seed=3)
    network.set_latency("a", {"b", "c"}, 0.3, jitter=0.25)
    async with linked(network, "a", "b") as (client, server):
        start = trio.current_time()
        sent: list[tuple[float, bytes]] = []
        arrivals: list[tuple[float, bytes]] = []

        async def send() -> None:
            for i in range(50):
                sent.append((trio.current_time(), b"%03d" % i))
                await client.send_all(b"%03d" % i)
                await trio.sleep(0.01)

        async def receive() -> None:
            data = b""
            while len(data) < 150:
                chunk = await server.receive_some()
                arrivals.append((trio.current_time(), bytes(chunk)))
                data += chunk
            assert data == b"".join(piece for _, piece in sent)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            nursery.start_soon(receive)
        times = [t for t, _ in arrivals]
        assert times == sorted(times)
        # Every chunk took at least the latency, and the first at most latency + jitter.
        assert times[0] - sent[0][0] >= 0.05
        assert times[0] - start <= 0.55 + 1e-9
        assert len(set(times)) > 1  # the jitter really varies


async def test_a_cut_holds_chunks_still_in_flight(autojump_clock: trio.testing.MockClock) -> None:
    network = SimulatedNetwork()
    network.set_latency("a", "b", 1.0)
    async with linked(network, "a", "b") as (client, server):
        start = trio.current_time()
        await client.send_all(b"early ")
        await trio.sleep(0.5)
        await client.send_all(b"late")
        await trio.sleep(0.75)  # "early " arrived at 1.0, "late" is due at 1.5
        network.partition("a", "b")
        assert network.statistics().bytes_held == 4
        assert await server.receive_some() == b"early "
        assert await nothing_arrives(server, 10)
        network.heal()  # "late" is overdue: delivered at once
        assert await server.receive_some() == b"late"
        assert trio.current_time() - start == pytest.approx(11.25)


async def test_bad_latency_is_refused() -> None:
    network = SimulatedNetwork()
    for seconds, jitter in ((-1.0, 0.0), (0.0, -0.1), (float("nan"), 0.0), (float("inf"), 0.0)):
        with pytest.raises(ValueError, match="latency"):
            network.set_latency("a", "b", seconds, jitter)
    with pytest.raises(ValueError, match="must not exceed the mean"):
        network.set_latency("a", "b", 0.1, 0.2)
    with pytest.raises(TypeError, match="number of seconds"):
        network.set_latency("a", "b", "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latency"):
        SimulatedNetwork(latency=(-1.0, 0.0))


# -- determinism ----------------------------------------------------------------------------


async def delivery_times(seed: int) -> list[tuple[float, bytes]]:
    """Run a fixed script with jitter; return when each chunk arrived, relative to start."""
    network = SimulatedNetwork(seed=seed, latency=(0.15, 0.1))
    start = trio.current_time()
    arrivals: list[tuple[float, bytes]] = []
    async with linked(network, "a", "b") as (client, server):

        async def send() -> None:
            for i in range(20):
                await client.send_all(b"<%d>" % i)
                await trio.sleep(0.03)
            await client.send_eof()  # type: ignore[attr-defined]

        async def receive() -> None:
            while chunk := await server.receive_some():
                arrivals.append((round(trio.current_time() - start, 9), bytes(chunk)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            nursery.start_soon(receive)
    return arrivals


async def test_same_seed_same_script_same_delivery_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first = await delivery_times(seed=42)
    again = await delivery_times(seed=42)
    other = await delivery_times(seed=43)
    assert first == again
    assert [t for t, _ in first] != [t for t, _ in other]
    assert b"".join(c for _, c in first) == b"".join(c for _, c in other)


# -- statistics ----------------------------------------------------------------------------


async def test_statistics_count_links_and_bytes(autojump_clock: trio.testing.MockClock) -> None:
    network = SimulatedNetwork()
    assert network.statistics() == NetworkStatistics(links_open=0, bytes_delivered=0, bytes_held=0)
    async with network.listen("b") as listener:
        client = await network.connect("b", source="a")
        server = await listener.accept()
        other = await network.connect("b", source="c")
        assert network.statistics().links_open == 2
        await client.send_all(b"12345")
        network.partition("a", "b")
        await client.send_all(b"678")
        stats = network.statistics()
        assert stats.bytes_delivered == 5  # delivered even though not read yet
        assert stats.bytes_held == 3
        network.heal()
        assert network.statistics() == NetworkStatistics(
            links_open=2, bytes_delivered=8, bytes_held=0
        )
        await client.aclose()
        assert network.statistics().links_open == 2  # the server end is still open
        await server.aclose()
        assert network.statistics().links_open == 1
        await other.aclose()
    assert network.statistics().links_open == 0  # the listener closed the unaccepted end


async def test_bytes_sent_to_a_closed_end_are_not_counted() -> None:
    network = SimulatedNetwork()
    async with linked(network, "a", "b") as (client, server):
        await server.aclose()
        # The close notice is instant without latency: the sender learns at once.
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"void")
        assert network.statistics().bytes_delivered == 0


# -- reading without waiting (one task reading many links) ------------------------------


async def test_a_watcher_is_told_of_data_eof_and_heal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = SimulatedNetwork()
    async with linked(network, "a", "b") as (client, server):
        assert isinstance(server, MemoryStream)
        calls: list[int] = []
        server.set_watcher(lambda: calls.append(1))
        assert server.receive_nowait() is None  # nothing yet: it would wait
        await client.send_all(b"one")
        await client.send_all(b"two")
        assert len(calls) == 2
        assert server.receive_nowait() == b"onetwo"
        assert server.receive_nowait() is None
        network.partition("a", "b")
        assert len(calls) == 3  # a change of the cut: worth a look
        await client.send_all(b"cut")
        assert len(calls) == 4
        assert server.receive_nowait() is None  # held behind the cut
        assert server.next_due is None  # nothing can come before a heal...
        network.heal()
        assert len(calls) == 5  # ...which tells the watcher
        assert server.receive_nowait() == b"cut"
        await client.send_eof()
        assert len(calls) == 6
        assert server.receive_nowait() == b""  # end of stream, as receive_some says it
        server.set_watcher(None)
        await client.aclose()
        assert len(calls) == 6


async def test_reading_without_waiting_respects_latency(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = SimulatedNetwork(latency=(0.5, 0.0))
    async with linked(network, "a", "b") as (client, server):
        assert isinstance(server, MemoryStream)
        start = trio.current_time()
        await client.send_all(b"later")
        assert server.receive_nowait() is None
        assert server.next_due == pytest.approx(start + 0.5)
        await trio.sleep_until(start + 0.5)
        assert server.receive_nowait(2) == b"la"  # max_bytes as for receive_some
        assert server.receive_nowait() == b"ter"
        assert server.next_due is None


async def test_reading_a_reset_or_closed_end_without_waiting_raises() -> None:
    network = SimulatedNetwork()
    async with linked(network, "a", "b") as (client, server):
        assert isinstance(server, MemoryStream) and isinstance(client, MemoryStream)
        await server.send_all(b"unread")
        network.crash("a")  # a dies with unread data: its kernel resets the connection
        with pytest.raises(trio.BrokenResourceError, match="reset"):
            server.receive_nowait()
        await server.aclose()
        with pytest.raises(trio.ClosedResourceError):
            server.receive_nowait()


async def test_a_framed_close_without_waiting_is_the_close_a_peer_reads() -> None:
    # A reader serving many links ends one in the middle of its step: the peer reads what
    # was sent and then the end of the stream, exactly as after aclose; aclose after it is
    # a no-op; a stream that may block cannot do it.
    network = SimulatedNetwork(seed=1)
    async with linked(network, "a", "b") as (client, server):
        framed = FramedStream(client)
        assert framed.try_send_nowait(encode_frame([1, 2]))
        framed.close_nowait()
        with pytest.raises(trio.ClosedResourceError):
            framed.try_send_nowait(encode_frame([3]))
        await framed.aclose()
        peer = FramedStream(server)
        assert await peer.receive() == [[1, 2]]
        with pytest.raises(EOFError):
            await peer.receive()
    blocking, _ = trio.testing.memory_stream_pair()
    with pytest.raises(TypeError, match="cannot be closed without waiting"):
        FramedStream(blocking).close_nowait()
