"""What `TlsStream` does beyond the transport contract (test_contract.py runs it as "tls"):
verification, refusals, broken connections and bulk reads, on real sockets on 127.0.0.1."""

from __future__ import annotations

import fcntl
import os
import socket
import ssl
import struct
import termios
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
import trustme

from hakit.transports import TlsStream, connect, open_listener


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def listener(
    server_ssl: ssl.SSLContext,
) -> AsyncIterator[tuple[trio.abc.Listener[trio.abc.Stream], str]]:
    listener, bound = await open_listener("127.0.0.1:0", ssl_context=server_ssl)
    async with listener:
        yield listener, bound


async def tls_pair(
    listener: trio.abc.Listener[trio.abc.Stream], bound: str, client_ssl: ssl.SSLContext
) -> tuple[TlsStream, TlsStream]:
    """Connect and accept at once (the client's connect waits for the handshake)."""
    accepted: list[TlsStream] = []

    async def accept() -> None:
        stream = await listener.accept()
        assert isinstance(stream, TlsStream)
        accepted.append(stream)
        await stream.do_handshake()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        client = await connect(bound, ssl_context=client_ssl)
    assert isinstance(client, TlsStream)
    return client, accepted[0]


def queued_bytes(stream: TlsStream) -> int:
    """Bytes waiting in the kernel's receive queue of the stream's socket (FIONREAD)."""
    raw = fcntl.ioctl(stream.ssl_socket.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", raw)[0])


async def test_a_server_the_client_does_not_trust_fails_both_handshakes(
    listener: tuple[trio.abc.Listener[trio.abc.Stream], str],
) -> None:
    server_listener, bound = listener
    untrusting = ssl.create_default_context()  # the system's CAs: not the test CA

    async def serve() -> None:
        stream = await server_listener.accept()
        assert isinstance(stream, TlsStream)
        with pytest.raises(trio.BrokenResourceError):
            await stream.do_handshake()
        with pytest.raises(trio.BrokenResourceError):  # broken for good
            await stream.receive_some()
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        with pytest.raises(trio.BrokenResourceError) as caught:
            await connect(bound, ssl_context=untrusting)
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value.__cause__)


async def test_a_plain_tcp_client_gets_no_plaintext_through(
    listener: tuple[trio.abc.Listener[trio.abc.Stream], str],
) -> None:
    server_listener, bound = listener
    host, port = bound.rsplit(":", 1)

    async def serve() -> None:
        stream = await server_listener.accept()
        async with stream:
            # Not a TLS record: the handshake fails, nothing reaches the reader.
            with pytest.raises(trio.BrokenResourceError):
                await stream.receive_some()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        plain = await trio.open_tcp_stream(host, int(port))
        async with plain:
            await plain.send_all(b"\x00\x00\x00\x05hello, in clear")


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    ca: trustme.CA, client_ssl: ssl.SSLContext
) -> None:
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ssl)
    ca.configure_trust(server_ssl)
    server_ssl.verify_mode = ssl.CERT_REQUIRED
    mutual_client = ssl.create_default_context()
    ca.configure_trust(mutual_client)
    ca.issue_cert("a-replica").configure_cert(mutual_client)
    listener, bound = await open_listener("127.0.0.1:0", ssl_context=server_ssl)
    async with listener:

        async def refuse() -> None:
            stream = await listener.accept()
            async with stream:
                with pytest.raises(trio.BrokenResourceError):
                    await stream.receive_some()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(refuse)
            # TLS 1.3: the client's handshake ends before the server checked it; the
            # server's refusal arrives as an alert on the client's first read.
            anonymous = await connect(bound, ssl_context=client_ssl)
            async with anonymous:
                with pytest.raises(trio.BrokenResourceError):
                    await anonymous.receive_some()

        client, server = await tls_pair(listener, bound, mutual_client)
        async with client, server:
            await client.send_all(b"with a certificate")
            assert await server.receive_some() == b"with a certificate"
            peer = server.ssl_socket.getpeercert()
            assert peer is not None
            assert ("DNS", "a-replica") in peer["subjectAltName"]


async def test_a_connection_cut_without_close_notify_is_broken_not_ended(
    listener: tuple[trio.abc.Listener[trio.abc.Stream], str], client_ssl: ssl.SSLContext
) -> None:
    client, server = await tls_pair(*listener, client_ssl)
    async with server:
        await client.send_all(b"partial")
        # A crash: the socket closes without TLS's close_notify (SSLSocket.close sends none).
        client.ssl_socket.close()
        assert await server.receive_some() == b"partial"
        with pytest.raises(trio.BrokenResourceError) as caught:
            await server.receive_some()
        assert isinstance(caught.value.__cause__, ssl.SSLError | OSError)
        await client.aclose()


async def test_a_bulk_receive_takes_every_record_already_arrived(
    listener: tuple[trio.abc.Listener[trio.abc.Stream], str], client_ssl: ssl.SSLContext
) -> None:
    client, server = await tls_pair(*listener, client_ssl)
    async with client, server:
        payload = bytes(range(256)) * 256  # 64 KiB: four full TLS records
        await client.send_all(payload)
        # A TLS 1.3 record adds 22 bytes (5 of header, 1 of content type, a 16-byte AEAD
        # tag; TLS 1.2 adds more): wait until all four are in the socket.
        while queued_bytes(server) < len(payload) + 4 * 22:
            await trio.lowlevel.checkpoint()
        assert await server.receive_some(256 * 1024) == payload
        # A small read takes only what it asks for, and leaves the rest for the next one.
        await client.send_all(b"abcdef")
        assert await server.receive_some(2) == b"ab"
        assert await server.receive_some() == b"cdef"


async def test_records_taken_before_a_corrupt_one_are_returned_then_it_breaks(
    listener: tuple[trio.abc.Listener[trio.abc.Stream], str], client_ssl: ssl.SSLContext
) -> None:
    client, server = await tls_pair(*listener, client_ssl)
    async with client, server:
        payload = bytes(range(256)) * 256  # four full records, read in one bulk receive
        await client.send_all(payload)
        # Then a record no key decrypts, written under the TLS layer (as a corrupting
        # middlebox would): application data, 32 bytes of garbage.
        garbage = b"\x17\x03\x03\x00\x20" + bytes(range(32))
        os.write(client.ssl_socket.fileno(), garbage)
        while queued_bytes(server) < len(payload) + 4 * 22 + len(garbage):
            await trio.lowlevel.checkpoint()
        assert await server.receive_some(256 * 1024) == payload  # nothing taken is lost
        with pytest.raises(trio.BrokenResourceError) as caught:
            await server.receive_some()
        assert isinstance(caught.value.__cause__, ssl.SSLError)


async def test_a_send_cancelled_midway_breaks_the_stream(
    listener: tuple[trio.abc.Listener[trio.abc.Stream], str], client_ssl: ssl.SSLContext
) -> None:
    client, server = await tls_pair(*listener, client_ssl)
    async with client, server:
        client.ssl_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        with trio.CancelScope() as scope:

            async def cancel_when_blocked() -> None:
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_when_blocked)
                # The server reads nothing: the send blocks once the buffers are full.
                await client.send_all(b"x" * (16 * 1024 * 1024))
        assert scope.cancelled_caught
        # Some of it may be on the wire, some half-encrypted: nothing can follow it.
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"more")


async def test_a_receive_cancelled_with_a_partial_record_inside_openssl_loses_nothing(
    listener: tuple[trio.abc.Listener[trio.abc.Stream], str], client_ssl: ssl.SSLContext
) -> None:
    # A proxy between the two ends lets through only the first bytes of a record: the
    # server's OpenSSL reads them and the receive waits for the rest. Cancelled there, it
    # takes nothing: once the rest comes, the next receive returns the whole plaintext. A
    # receive cancelled while plaintext is already waiting takes nothing either.
    tls_listener, bound = listener
    host, port = bound.rsplit(":", 1)
    (front,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    gate = trio.Event()
    cut = [False]

    async def pump(source: trio.abc.Stream, sink: trio.abc.Stream, gated: bool) -> None:
        while data := await source.receive_some(65536):
            if gated and cut[0]:
                cut[0] = False
                await sink.send_all(data[:10])
                await gate.wait()
                data = data[10:]
            await sink.send_all(data)

    async def proxy() -> None:
        near = await front.accept()
        far = await trio.open_tcp_stream(host, int(port))
        async with near, far, trio.open_nursery() as pumps:
            pumps.start_soon(pump, near, far, True)
            pumps.start_soon(pump, far, near, False)

    async with front, trio.open_nursery() as nursery:
        nursery.start_soon(proxy)
        front_port = front.socket.getsockname()[1]
        accepted: list[TlsStream] = []

        async def accept() -> None:
            stream = await tls_listener.accept()
            assert isinstance(stream, TlsStream)
            await stream.do_handshake()
            accepted.append(stream)

        async with trio.open_nursery() as handshakes:
            handshakes.start_soon(accept)
            client = await connect(f"127.0.0.1:{front_port}", ssl_context=client_ssl)
        assert isinstance(client, TlsStream)
        server = accepted[0]
        payload = bytes(range(256)) * 4
        cut[0] = True
        await client.send_all(payload)
        while queued_bytes(server) < 10:
            await trio.lowlevel.checkpoint()
        with trio.CancelScope() as scope:

            async def cancel_when_blocked() -> None:
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()

            async with trio.open_nursery() as canceller:
                canceller.start_soon(cancel_when_blocked)
                await server.receive_some()
        assert scope.cancelled_caught
        # OpenSSL took the record's first bytes and holds them, with no plaintext yet.
        assert queued_bytes(server) == 0 and server.ssl_socket.pending() == 0
        gate.set()
        assert await server.receive_some(8) == payload[:8]
        with trio.CancelScope() as again:
            again.cancel()
            await server.receive_some()
        assert again.cancelled_caught
        assert await server.receive_some() == payload[8:]
        await client.aclose()
        await server.aclose()
        nursery.cancel_scope.cancel()
