"""One contract for every transport: mem (with and without latency), TCP, TLS on TCP (a
trustme certificate, verified) and unix sockets.

Each test gets a connected (client, server) pair made by `open_listener` + `connect`, the way
the runtime makes them, and checks behaviour the runtime relies on. Tests request the
``clock`` fixture so that the latency variant runs on virtual time (pytest-trio picks up a
`trio.abc.Clock` among a test's arguments); the socket variants run on the real clock and
never sleep.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import ssl
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing
import trustme

from hakit.protocol import RemoteProtocolError, encode_frame
from hakit.transports import (
    Address,
    FramedStream,
    MemoryAddress,
    SimulatedNetwork,
    TcpAddress,
    TlsStream,
    UnixAddress,
    connect,
    open_listener,
    parse_address,
)

KINDS = ["mem", "mem-latency", "tcp", "tls", "unix"]


@dataclass
class Transport:
    kind: str
    address: str  # what to listen on
    network: SimulatedNetwork | None
    server_ssl: ssl.SSLContext | None = None
    client_ssl: ssl.SSLContext | None = None

    async def listen(self) -> tuple[trio.abc.Listener[trio.abc.Stream], str]:
        return await open_listener(self.address, network=self.network, ssl_context=self.server_ssl)

    async def connect(self, address: str | Address) -> trio.abc.Stream:
        return await connect(
            address, network=self.network, source="client", ssl_context=self.client_ssl
        )


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1, and a client context trusting it."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@pytest.fixture(params=KINDS)
def transport(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> Iterator[Transport]:
    kind = str(request.param)
    if kind == "tcp":
        yield Transport(kind, "127.0.0.1:0", None)
    elif kind == "tls":
        yield Transport(kind, "127.0.0.1:0", None, *tls_contexts)
    elif kind == "unix":
        path = tmp_path / "s.sock"
        if len(str(path)) < 100:
            yield Transport(kind, str(path), None)
        else:
            # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer.
            short = tempfile.mkdtemp(prefix="hk", dir="/tmp")
            try:
                yield Transport(kind, f"unix:{short}/s.sock", None)
            finally:
                shutil.rmtree(short, ignore_errors=True)
    else:
        network = SimulatedNetwork(seed=7)
        if kind == "mem-latency":
            network = SimulatedNetwork(seed=7, latency=(0.010, 0.005))
        yield Transport(kind, "mem:server", network)


@pytest.fixture
def clock(transport: Transport) -> trio.testing.MockClock | None:
    return trio.testing.MockClock(autojump_threshold=0) if transport.network else None


async def connect_pair(
    transport: Transport, listener: trio.abc.Listener[trio.abc.Stream], address: str | Address
) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    """Connect and accept at once: a TLS client's `connect` returns after the handshake,
    which needs the accepting side to take part (as a node's accept loop does)."""
    accepted: list[trio.abc.Stream] = []

    async def accept() -> None:
        stream = await listener.accept()
        accepted.append(stream)
        if isinstance(stream, TlsStream):
            await stream.do_handshake()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        client = await transport.connect(address)
    return client, accepted[0]


@pytest.fixture
async def pair(transport: Transport) -> AsyncIterator[tuple[trio.abc.Stream, trio.abc.Stream]]:
    listener, bound = await transport.listen()
    async with listener:
        client, server = await connect_pair(transport, listener, bound)
    async with client, server:
        yield client, server


Pair = tuple[trio.abc.Stream, trio.abc.Stream]
Clock = trio.testing.MockClock | None


async def receive_exactly(stream: trio.abc.Stream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


async def receive_until_eof(stream: trio.abc.Stream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some():
        data += chunk
    return bytes(data)


# -- byte streams -----------------------------------------------------------------------


async def test_bytes_round_trip_both_ways(pair: Pair, clock: Clock) -> None:
    client, server = pair
    await client.send_all(b"ping")
    assert await receive_exactly(server, 4) == b"ping"
    await server.send_all(bytearray(b"pong"))
    assert await receive_exactly(client, 4) == b"pong"
    await client.send_all(memoryview(b"xyz"))
    assert await receive_exactly(server, 3) == b"xyz"


async def test_receive_some_respects_max_bytes(pair: Pair, clock: Clock) -> None:
    client, server = pair
    await client.send_all(b"abcdef")
    first = await server.receive_some(2)
    assert 1 <= len(first) <= 2
    rest = await receive_exactly(server, 6 - len(first))
    assert first + rest == b"abcdef"


async def test_large_transfers_arrive_intact_and_in_order(pair: Pair, clock: Clock) -> None:
    client, server = pair
    rng = random.Random(1)
    up = rng.randbytes(3 * 1024 * 1024 + 17)
    down = rng.randbytes(2 * 1024 * 1024 + 5)
    received: dict[str, bytes] = {}

    async def send_in_pieces(stream: trio.abc.Stream, data: bytes) -> None:
        view = memoryview(data)
        pos = 0
        while pos < len(data):
            size = rng.randrange(1, 300_000)
            await stream.send_all(view[pos : pos + size])
            pos += size

    async def receive(name: str, stream: trio.abc.Stream, size: int) -> None:
        received[name] = await receive_exactly(stream, size)

    # Both directions at once: a transport must not need the reader to be idle to deliver.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_in_pieces, client, up)
        nursery.start_soon(send_in_pieces, server, down)
        nursery.start_soon(receive, "up", server, len(up))
        nursery.start_soon(receive, "down", client, len(down))
    assert received["up"] == up
    assert received["down"] == down


async def test_eof_after_the_data_on_close(pair: Pair, clock: Clock) -> None:
    client, server = pair
    await client.send_all(b"last words")
    await client.aclose()
    assert await receive_until_eof(server) == b"last words"
    # EOF is sticky.
    assert await server.receive_some() == b""
    assert await server.receive_some(10) == b""


async def test_send_after_close_raises_closed_resource(pair: Pair, clock: Clock) -> None:
    client, _server = pair
    await client.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await client.receive_some()
    await client.aclose()  # closing twice is fine


async def test_close_wakes_a_blocked_receiver(pair: Pair, clock: Clock) -> None:
    client, _server = pair

    async def receive() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await client.receive_some()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        await client.aclose()


async def send_until_broken(stream: trio.abc.Stream) -> None:
    for _ in range(1000):
        await stream.send_all(b"x" * 1024)
        await trio.lowlevel.checkpoint()


async def test_sending_to_a_closed_peer_breaks(pair: Pair, clock: Clock) -> None:
    client, server = pair
    await server.aclose()
    assert await client.receive_some() == b""
    # A socket learns of the peer's close from the reset its next segment provokes, so the
    # first sends may still succeed; a few more must fail.
    with pytest.raises(trio.BrokenResourceError):
        await send_until_broken(client)


async def test_concurrent_sends_are_busy(pair: Pair, clock: Clock) -> None:
    client, server = pair
    with pytest.RaisesGroup(trio.BusyResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"a" * 100)
            nursery.start_soon(client.send_all, b"b" * 100)
    assert server  # the pair stays usable for the fixture's teardown


async def test_concurrent_receives_are_busy(pair: Pair, clock: Clock) -> None:
    client, _server = pair
    with pytest.RaisesGroup(trio.BusyResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.receive_some)
            nursery.start_soon(client.receive_some)


async def test_half_close_if_supported(pair: Pair, clock: Clock) -> None:
    client, server = pair
    if isinstance(client, TlsStream):
        # TLS half-closes with close_notify only in 1.3, and OpenSSL's shutdown may read
        # (and drop) what the peer still sends: TLS streams are not half-closeable (nor is
        # trio.SSLStream), and nothing in hakit half-closes.
        assert not isinstance(client, trio.abc.HalfCloseableStream)
        return
    assert isinstance(client, trio.abc.HalfCloseableStream)
    await client.send_all(b"request")
    await client.send_eof()
    await client.send_eof()  # idempotent
    assert await receive_until_eof(server) == b"request"
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"more")
    # The other direction still works.
    await server.send_all(b"answer")
    await server.aclose()
    assert await receive_until_eof(client) == b"answer"


# -- framing ------------------------------------------------------------------------------


async def test_framed_round_trips_many_frames(pair: Pair, clock: Clock) -> None:
    client, server = pair
    sender, receiver = FramedStream(client), FramedStream(server, receive_size=4096)
    values = [{"i": i, "key": f"k{i}", "data": bytes([i % 256]) * (i % 50)} for i in range(20_000)]
    got: list[object] = []

    async def send() -> None:
        for start in range(0, len(values), 250):
            batch = b"".join(encode_frame(v) for v in values[start : start + 250])
            await sender.send(batch)

    async def receive() -> None:
        while len(got) < len(values):
            batch = await receiver.receive()
            assert batch
            got.extend(batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        nursery.start_soon(receive)
    assert got == values
    await sender.send(encode_frame("one more"))
    assert await receiver.receive() == ["one more"]
    assert receiver.stream is server


async def test_framed_values_keep_their_types(pair: Pair, clock: Clock) -> None:
    client, server = pair
    value = [None, True, -1, 2**63 - 1, 1.5, "text", b"bytes", {"k": [1, 2]}, {1: "int key"}]
    await FramedStream(client).send(encode_frame(value))
    assert await FramedStream(server).receive() == [value]


async def test_frame_split_over_many_sends_reassembles(pair: Pair, clock: Clock) -> None:
    client, server = pair
    frame = encode_frame({"payload": "x" * 300, "n": 42})
    receiver = FramedStream(server)

    async def send_byte_by_byte() -> None:
        for i in range(len(frame)):
            await client.send_all(frame[i : i + 1])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_byte_by_byte)
        assert await receiver.receive() == [{"payload": "x" * 300, "n": 42}]


async def test_oversized_frame_is_a_remote_protocol_error(pair: Pair, clock: Clock) -> None:
    client, server = pair
    await FramedStream(client).send(encode_frame(b"x" * 1000))
    with pytest.raises(RemoteProtocolError, match="exceeds the maximum"):
        await FramedStream(server, max_frame_size=100).receive()


async def test_garbage_is_a_remote_protocol_error(pair: Pair, clock: Clock) -> None:
    client, server = pair
    # 0xc1 is the one byte msgpack never uses.
    await client.send_all(b"\x00\x00\x00\x01\xc1")
    with pytest.raises(RemoteProtocolError, match="not valid msgpack"):
        await FramedStream(server).receive()


async def test_frames_before_garbage_are_returned_first(pair: Pair, clock: Clock) -> None:
    client, server = pair
    receiver = FramedStream(server)
    await client.send_all(encode_frame(1) + encode_frame(2) + b"\x00\x00\x00\x01\xc1")
    got: list[object] = []

    async def receive_forever() -> None:
        while True:
            got.extend(await receiver.receive())

    with pytest.raises(RemoteProtocolError):
        await receive_forever()
    assert got == [1, 2]
    # The framing is lost for good.
    with pytest.raises(RemoteProtocolError):
        await receiver.receive()


async def test_eof_between_frames_is_eof_error(pair: Pair, clock: Clock) -> None:
    client, server = pair
    await client.send_all(encode_frame("bye"))
    await client.aclose()
    receiver = FramedStream(server)
    assert await receiver.receive() == ["bye"]
    with pytest.raises(EOFError, match="connection closed by the peer"):
        await receiver.receive()


async def test_eof_in_the_middle_of_a_frame_is_a_protocol_error(pair: Pair, clock: Clock) -> None:
    client, server = pair
    frame = encode_frame("truncated")
    await client.send_all(frame[:-3])
    await client.aclose()
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        await FramedStream(server).receive()


async def test_framed_stream_closes_its_stream(pair: Pair, clock: Clock) -> None:
    client, server = pair
    async with FramedStream(client):
        pass
    assert await server.receive_some() == b""


# -- listeners --------------------------------------------------------------------------


async def test_listener_reports_a_canonical_connectable_address(
    transport: Transport, clock: Clock
) -> None:
    listener, bound = await transport.listen()
    async with listener:
        address = parse_address(bound)
        assert str(address) == bound
        if transport.kind in ("tcp", "tls"):
            assert isinstance(address, TcpAddress)
            assert address.host == "127.0.0.1"
            assert address.port != 0
        elif transport.kind == "unix":
            assert isinstance(address, UnixAddress)
        else:
            assert address == MemoryAddress("server")
        # The Address object works as well as the string.
        client, server = await connect_pair(transport, listener, address)
        async with client, server:
            await client.send_all(b"hi")
            assert await receive_exactly(server, 2) == b"hi"


async def test_many_clients_one_listener(transport: Transport, clock: Clock) -> None:
    listener, bound = await transport.listen()

    async def echo_upper(stream: trio.abc.Stream) -> None:
        async with stream:
            if isinstance(stream, trio.abc.HalfCloseableStream):
                data = await receive_until_eof(stream)
            else:  # TLS: no half-close, the request has a known size
                data = await receive_exactly(stream, len("client 0"))
            await stream.send_all(data.upper())

    async def serve(count: int) -> None:
        async with trio.open_nursery() as handlers:
            for _ in range(count):
                handlers.start_soon(echo_upper, await listener.accept())

    async def client(i: int) -> None:
        async with await transport.connect(bound) as stream:
            await stream.send_all(f"client {i}".encode())
            if transport.kind == "tls":
                assert isinstance(stream, TlsStream)
            else:
                assert isinstance(stream, trio.abc.HalfCloseableStream)
                await stream.send_eof()
            assert await receive_until_eof(stream) == f"CLIENT {i}".encode()

    async with listener, trio.open_nursery() as nursery:
        nursery.start_soon(serve, 5)
        for i in range(5):
            nursery.start_soon(client, i)


async def test_concurrent_accepts_are_busy(transport: Transport, clock: Clock) -> None:
    # Sockets refuse a second accepting task; the memory transport must not be laxer, or
    # code tested on mem: would break on TCP.
    listener, _ = await transport.listen()
    async with listener:
        with pytest.RaisesGroup(trio.BusyResourceError):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listener.accept)
                nursery.start_soon(listener.accept)


async def test_connect_to_a_closed_listener_raises_os_error(
    transport: Transport, clock: Clock
) -> None:
    listener, bound = await transport.listen()
    await listener.aclose()
    with pytest.raises(OSError):  # noqa: PT011 - refused / not found / unreachable all fit
        await transport.connect(bound)


async def test_connect_to_an_absent_address_raises_os_error(
    transport: Transport, clock: Clock
) -> None:
    if transport.kind in ("tcp", "tls"):
        # A port that was free a moment ago: bind it, read it, release it.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        address = f"127.0.0.1:{port}"
    elif transport.kind == "unix":
        address = str(Path(str(parse_address(transport.address))).with_name("absent.sock"))
    else:
        address = "mem:nobody"
    with pytest.raises(OSError):  # noqa: PT011
        await transport.connect(address)


async def test_accept_after_close_raises_closed_resource(
    transport: Transport, clock: Clock
) -> None:
    listener, _ = await transport.listen()

    async def accept() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await listener.accept()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        await trio.testing.wait_all_tasks_blocked()
        await listener.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await listener.accept()


async def test_listening_twice_on_one_address_is_refused(
    transport: Transport, clock: Clock
) -> None:
    listener, bound = await transport.listen()
    async with listener:
        with pytest.raises(OSError):  # noqa: PT011 - EADDRINUSE
            await open_listener(bound, network=transport.network)


# -- transport-specific details -----------------------------------------------------------


async def test_tcp_streams_disable_nagle() -> None:
    listener, bound = await open_listener("127.0.0.1:0")
    async with listener, await connect(bound) as client, await listener.accept() as server:
        for stream in (client, server):
            assert isinstance(stream, trio.SocketStream)
            assert stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


async def test_tls_streams_disable_nagle(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    tls = Transport("tls", "127.0.0.1:0", None, *tls_contexts)
    listener, bound = await tls.listen()
    async with listener:
        client, server = await connect_pair(tls, listener, bound)
    async with client, server:
        for stream in (client, server):
            assert isinstance(stream, TlsStream)
            assert stream.ssl_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


@pytest.fixture
def short_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="hk", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_unix_listener_removes_its_socket_file(short_dir: str) -> None:
    path = f"{short_dir}/s.sock"
    listener, bound = await open_listener(f"unix:{path}")
    assert bound == path
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    await listener.aclose()
    assert not await trio.Path(path).exists()


async def test_unix_listener_replaces_a_stale_socket_file(short_dir: str) -> None:
    path = f"{short_dir}/s.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(path)  # bound, never listening: what a crashed process leaves behind
    assert await trio.Path(path).exists()
    listener, _ = await open_listener(path)
    async with listener, await connect(path) as client, await listener.accept() as server:
        await client.send_all(b"ok")
        assert await receive_exactly(server, 2) == b"ok"


async def test_unix_listener_refuses_a_regular_file(short_dir: str) -> None:
    path = trio.Path(short_dir, "not-a-socket")
    await path.write_text("precious")
    with pytest.raises(FileExistsError):
        await open_listener(str(path))
    assert await path.read_text() == "precious"


async def test_unix_listener_keeps_a_file_that_replaced_its_socket(short_dir: str) -> None:
    path = f"{short_dir}/s.sock"
    listener, _ = await open_listener(path)
    os.unlink(path)
    await trio.Path(path).write_text("someone else's")
    await listener.aclose()
    assert await trio.Path(path).read_text() == "someone else's"


async def test_mem_address_without_a_network_is_explained() -> None:
    with pytest.raises(ValueError, match="only inside a hakit cluster"):
        await connect("mem:a")
    with pytest.raises(ValueError, match="only inside a hakit cluster"):
        await open_listener("mem:a")


async def test_bad_address_strings_are_value_errors() -> None:
    with pytest.raises(ValueError, match="bad address"):
        await connect("nonsense")
    with pytest.raises(ValueError, match="bad address"):
        await open_listener("127.0.0.1:99999")
    with pytest.raises(TypeError):
        await connect(("127.0.0.1", 5000))  # type: ignore[arg-type]
