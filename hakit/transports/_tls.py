"""TLS over a TCP socket as a trio stream, with OpenSSL reading and writing the socket itself.

Why not `trio.SSLStream`: it drives an `ssl.SSLObject` through memory buffers, and every
send or receive takes an internal lock (a scheduler pass of its own) before the socket
operation (another one), with Python code copying the bytes between the socket and the
buffers. On a sync commit's round trip of a few hundred bytes each way, that doubled the
scheduler passes of both peers and cost 30-45% of the plain TCP throughput. Here the
socket is wrapped by `ssl.SSLContext.wrap_socket` in non-blocking mode: one C call encrypts
and sends (or receives and decrypts), and the stream waits for the socket only when OpenSSL
says it must (`ssl.SSLWantReadError`, `ssl.SSLWantWriteError`), exactly as `trio.SocketStream`
waits on a plain socket. Certificates are checked by the context as before: this module only
moves bytes.
"""

from __future__ import annotations

import contextlib
import select
import socket as stdlib_socket
import ssl

import trio

#: The largest plaintext a TLS record carries (RFC 8446 5.1): a receive that got a record this
#: full may find the next one of the same write already arrived.
_MAX_RECORD = 16384
_DEFAULT_RECEIVE_SIZE = 65536


class TlsStream(trio.abc.Stream):
    """A TLS connection over a connected TCP socket.

    The handshake runs on `do_handshake`, or on the first send or receive. Like
    `trio.SSLStream`, a failure of TLS (a bad certificate, a corrupt record) or of the socket
    raises `trio.BrokenResourceError` with the `ssl.SSLError` or `OSError` as its cause, and
    the stream is broken from then on; a peer that closes without TLS's close_notify (a crash)
    breaks it too, while a clean close reads as end of stream (``b""``).

    Args:
        stream: the connected TCP stream; the `TlsStream` takes its socket over.
        context: the TLS context (a server or a client one, matching `server_side`).
        server_side: whether this end accepted the connection.
        server_hostname: the name (or IP address) the server's certificate must match; a
            client context with ``check_hostname`` requires it.
    """

    def __init__(
        self,
        stream: trio.SocketStream,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        trio_sock = stream.socket
        raw = stdlib_socket.socket(
            trio_sock.family, trio_sock.type, trio_sock.proto, fileno=trio_sock.detach()
        )
        try:
            # An unconnected socket (the peer reset it already) would be wrapped without TLS
            # state, its reads and writes in clear: refuse it (OSError ENOTCONN).
            raw.getpeername()
            raw.setblocking(False)
            self._sock = context.wrap_socket(
                raw,
                server_side=server_side,
                server_hostname=server_hostname,
                do_handshake_on_connect=False,
                # A connection cut without close_notify must not read as a clean end.
                suppress_ragged_eofs=False,
            )
        except BaseException:
            raw.close()
            raise
        # Whether bytes wait on the socket: asked before a read that would likely find none
        # (a poll costs a fifth of the ssl.SSLWantReadError such a read raises). No poll()
        # (Windows): reads are just tried.
        self._poll = select.poll() if hasattr(select, "poll") else None
        if self._poll is not None:
            self._poll.register(self._sock.fileno(), select.POLLIN)
        self._handshaken = False
        self._closed = False
        self._broken: BaseException | None = None
        self._sending = False
        self._receiving = False
        # The task waiting on each direction of the socket and what its waiters wait on:
        # trio allows one waiter per direction, and in a TLS 1.2 renegotiation (or a TLS 1.3
        # key update under back-pressure) a send may need to read, or a receive to write.
        self._read_wait: trio.Event | None = None
        self._write_wait: trio.Event | None = None

    def __repr__(self) -> str:
        return f"<TlsStream fd={self._sock.fileno()}>"

    @property
    def ssl_socket(self) -> ssl.SSLSocket:
        """The `ssl.SSLSocket` (for `getpeercert`, `version`, `cipher`); do not read it."""
        return self._sock

    # -- trio.abc.Stream -----------------------------------------------------------------------
    async def do_handshake(self) -> None:
        """Run the TLS handshake now (idempotent); it verifies the peer as the context says.

        Raises:
            trio.BrokenResourceError: the handshake failed (the `ssl.SSLError` is the cause).
            trio.ClosedResourceError: the stream was closed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._handshaken:
            self._check_usable()
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if not await self._handshake():
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send all of `data` (a stream cancelled in the middle is broken)."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            if not self._handshaken:
                waited = await self._handshake()
            self._check_usable()
            view = memoryview(data)
            try:
                while view:
                    try:
                        sent = self._sock.send(view)
                    except ssl.SSLWantWriteError:
                        waited = True
                        await self._wait(readable=False)
                    except ssl.SSLWantReadError:
                        waited = True
                        await self._wait(readable=True)
                    else:
                        # Whole writes (OpenSSL's default mode); a partial one would go on.
                        view = view[sent:]
            except BaseException as exc:
                # Part of the data may be sent, or sit half-encrypted in OpenSSL: no later
                # write could carry on from there.
                self._fail(exc)
                raise
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the socket can take more data."""
        self._check_usable()
        await trio.lowlevel.wait_writable(self._sock)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Receive and decrypt what has arrived, at most `max_bytes` (default 64 KiB).

        Returns:
            The data; ``b""`` once the peer closed the connection cleanly.
        """
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        size = _DEFAULT_RECEIVE_SIZE if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be at least 1")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            if not self._handshaken:
                waited = await self._handshake()
            self._check_usable()
            try:
                if self._nothing_arrived():
                    waited = True
                    await self._wait(readable=True)
                while True:
                    try:
                        data = self._sock.recv(size)
                    except ssl.SSLWantReadError:
                        waited = True
                        await self._wait(readable=True)
                    except ssl.SSLWantWriteError:
                        waited = True
                        await self._wait(readable=False)
                    except ssl.SSLZeroReturnError:  # the peer's close_notify
                        data = b""
                        break
                    else:
                        break
                if len(data) == _MAX_RECORD and size > _MAX_RECORD:
                    # A full record: a bulk write, whose next records may be here already;
                    # take them in the same call rather than one scheduler pass each.
                    data = self._more(data, size)
            except (ssl.SSLError, OSError) as exc:
                self._fail(exc)
                raise
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        finally:
            self._receiving = False

    def _more(self, first: bytes, size: int) -> bytes:
        chunks = [first]
        got = len(first)
        while got + _MAX_RECORD <= size and not self._nothing_arrived():
            try:
                chunk = self._sock.recv(size - got)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, ssl.SSLZeroReturnError):
                break  # nothing more now (or the end, which the next call reports)
            except (ssl.SSLError, OSError) as exc:
                # A bad record (or a reset) behind good ones: return the plaintext already
                # taken, which no later call could give back; the next call raises.
                self._broken = exc
                break
            chunks.append(chunk)
            got += len(chunk)
            if len(chunk) < _MAX_RECORD:
                break
        return b"".join(chunks)

    def _nothing_arrived(self) -> bool:
        """Whether a read would ask to wait: OpenSSL holds no plaintext, the socket no byte.

        Without read-ahead OpenSSL takes one record at a time from the socket, so what it
        holds beyond `pending` is at most part of a record, whose rest has yet to arrive.
        """
        poll = self._poll
        return poll is not None and not self._sock.pending() and not poll.poll(0)

    async def aclose(self) -> None:
        """Send TLS's close_notify if the link is healthy (without waiting), then close."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        sock = self._sock
        if self._handshaken and self._broken is None:
            # SSL_shutdown writes close_notify; the peer's own is not awaited (it may never
            # come, and nothing is read afterwards). A full send buffer just loses it.
            with contextlib.suppress(ssl.SSLError, OSError, ValueError):
                sock.unwrap()
        trio.lowlevel.notify_closing(sock)
        sock.close()
        await trio.lowlevel.checkpoint()

    # -- helpers -------------------------------------------------------------------------------
    async def _handshake(self) -> bool:
        """Run the handshake to its end; return whether it waited (it then checkpointed)."""
        self._check_usable()
        waited = False
        try:
            while True:
                try:
                    self._sock.do_handshake()
                except ssl.SSLWantReadError:
                    waited = True
                    await self._wait(readable=True)
                except ssl.SSLWantWriteError:
                    waited = True
                    await self._wait(readable=False)
                else:
                    break
        except (ssl.SSLError, OSError, ValueError) as exc:
            # ValueError: ssl.CertificateError is one (a certificate for another host).
            self._fail(exc)
            raise
        self._handshaken = True
        return waited

    async def _wait(self, *, readable: bool) -> None:
        """Wait until the socket is readable (writable), or until the waiting task wakes.

        trio lets one task wait on each direction: a second one waits for the first to wake,
        then retries its operation (which OpenSSL may now complete, or ask to wait again).
        """
        waiting = self._read_wait if readable else self._write_wait
        if waiting is not None:
            await waiting.wait()
            return
        event = trio.Event()
        if readable:
            self._read_wait = event
        else:
            self._write_wait = event
        try:
            if readable:
                await trio.lowlevel.wait_readable(self._sock)
            else:
                await trio.lowlevel.wait_writable(self._sock)
        finally:
            if readable:
                self._read_wait = None
            else:
                self._write_wait = None
            event.set()
        self._check_usable()

    def _check_usable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this TLS stream was closed")
        if self._broken is not None:
            raise trio.BrokenResourceError("this TLS stream is broken") from self._broken

    def _fail(self, exc: BaseException) -> None:
        """Mark the stream broken by `exc`, and raise trio's error for a TLS or socket one.

        As with `trio.SSLStream`, the `trio.BrokenResourceError`'s cause is the
        `ssl.SSLError` or `OSError`.
        """
        if isinstance(exc, trio.ClosedResourceError | trio.BrokenResourceError):
            return
        if self._broken is None:
            self._broken = exc
        if isinstance(exc, ssl.SSLError | OSError | ValueError):
            raise trio.BrokenResourceError from exc


class TlsListener(trio.abc.Listener[trio.abc.Stream]):
    """Accept TCP connections and speak TLS on them (the handshake is the stream's).

    Args:
        listener: the TCP listener.
        context: the server context.
    """

    def __init__(self, listener: trio.SocketListener, context: ssl.SSLContext) -> None:
        self._listener = listener
        self._context = context

    @property
    def socket(self) -> trio.socket.SocketType:
        """The listening socket."""
        return self._listener.socket

    async def accept(self) -> TlsStream:
        """Wait for the next connection.

        Its handshake runs on first use, under the caller's timeout: a slow or silent client
        never holds the accept loop. A connection reset before it could be wrapped is
        dropped, and the next one accepted.
        """
        while True:
            stream = await self._listener.accept()
            try:
                return TlsStream(stream, self._context, server_side=True)
            except OSError:
                await trio.aclose_forcefully(stream)

    async def aclose(self) -> None:
        """Stop listening."""
        await self._listener.aclose()
