"""Open a stream or a listener for any connection string: TCP, unix socket or ``mem:``."""

from __future__ import annotations

import errno
import os
import ssl
import stat

import trio

from ._address import Address, MemoryAddress, TcpAddress, UnixAddress, parse_address
from ._memory import SimulatedNetwork
from ._tls import TlsListener, TlsStream


def _as_address(address: str | Address) -> Address:
    if isinstance(address, str):
        return parse_address(address)
    if isinstance(address, TcpAddress | UnixAddress | MemoryAddress):
        return address
    raise TypeError(f"an address must be a str or an Address, not {type(address).__name__}")


def _need_network(address: MemoryAddress, network: SimulatedNetwork | None) -> SimulatedNetwork:
    if network is None:
        raise ValueError(
            f"{address} is a memory address: mem: addresses work only inside a hakit "
            "cluster, between nodes sharing its simulated network; use host:port or a "
            "unix socket path to reach another process"
        )
    return network


async def connect(
    address: str | Address,
    *,
    network: SimulatedNetwork | None = None,
    source: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> trio.abc.Stream:
    """Connect to a listener.

    TCP streams have ``TCP_NODELAY`` set (trio's `SocketStream` does it), so small frames
    are not held back by Nagle's algorithm.

    Args:
        address: a connection string (see `parse_address`) or an `Address`.
        network: the cluster's simulated network; required for ``mem:`` addresses.
        source: the connecting node's name, which a ``mem:`` link needs for partitions;
            ignored by the other transports.
        ssl_context: speak TLS over a TCP connection, checking the server's certificate
            as the context says (by default against the host of `address`). Unix sockets
            (guarded by file permissions) and ``mem:`` links (never leave the process) do
            not use it.

    Returns:
        The connected stream (with TLS, a `TlsStream` whose handshake is done).

    Raises:
        ValueError: the address is malformed, or is a ``mem:`` address without a network.
        OSError: the connection failed (refused, unreachable, partitioned...).
        trio.BrokenResourceError: the TLS handshake failed (its ``__cause__`` is the
            `ssl.SSLError`, a bad certificate for instance).
    """
    target = _as_address(address)
    if isinstance(target, TcpAddress):
        stream = await trio.open_tcp_stream(target.host, target.port)
        if ssl_context is None:
            return stream
        try:
            tls = TlsStream(stream, ssl_context, server_side=False, server_hostname=target.host)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tls)
            raise
        return tls
    if isinstance(target, UnixAddress):
        return await trio.open_unix_socket(target.path)
    return await _need_network(target, network).connect(target.name, source=source)


async def open_listener(
    address: str | Address,
    *,
    network: SimulatedNetwork | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[trio.abc.Listener[trio.abc.Stream], str]:
    """Start listening on an address.

    Args:
        address: a connection string (see `parse_address`) or an `Address`; a TCP port of 0
            picks a free port.
        network: the cluster's simulated network; required for ``mem:`` addresses.
        ssl_context: a server context: every accepted TCP connection speaks TLS (a
            `TlsStream`; its handshake runs on the first read or write, or on
            ``await stream.do_handshake()``). Not used by unix sockets and ``mem:``.

    Returns:
        The listener, and the canonical connection string it is bound to (with the real
        port when 0 was asked for), which peers can pass to `connect`.

    Raises:
        ValueError: the address is malformed, or is a ``mem:`` address without a network.
        OSError: the address is in use, or cannot be bound.
    """
    target = _as_address(address)
    if isinstance(target, TcpAddress):
        tcp, bound = await _open_tcp_listener(target)
        if ssl_context is None:
            return tcp, bound
        return TlsListener(tcp, ssl_context), bound
    if isinstance(target, UnixAddress):
        unix = await _UnixListener.open(target.path)
        return unix, str(target)
    name = target.name
    return _need_network(target, network).listen(name), str(target)


async def _open_tcp_listener(target: TcpAddress) -> tuple[trio.SocketListener, str]:
    listeners = await trio.open_tcp_listeners(target.port, host=target.host)
    # A host name may resolve to several addresses (IPv4 and IPv6), each bound separately;
    # an address string names one endpoint, so keep the first and close the others.
    first, rest = listeners[0], listeners[1:]
    for extra in rest:
        await extra.aclose()
    sockname = first.socket.getsockname()
    return first, str(TcpAddress(sockname[0], sockname[1]))


class _UnixListener(trio.abc.Listener[trio.abc.Stream]):
    """A unix socket listener that removes its socket file when closed."""

    def __init__(self, listener: trio.SocketListener, path: str, identity: tuple[int, int]) -> None:
        self._listener = listener
        self._path = path
        self._identity = identity
        self._closed = False

    @classmethod
    async def open(cls, path: str) -> _UnixListener:
        await _remove_stale_socket(path)
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        try:
            await sock.bind(path)
            info = os.stat(path)
            sock.listen(trio.socket.SOMAXCONN)
        except BaseException:
            sock.close()
            raise
        return cls(trio.SocketListener(sock), path, (info.st_dev, info.st_ino))

    @property
    def socket(self) -> trio.socket.SocketType:
        """The listening socket."""
        return self._listener.socket

    async def accept(self) -> trio.SocketStream:
        """Wait for the next connection and return its stream."""
        return await self._listener.accept()

    async def aclose(self) -> None:
        """Stop listening and remove the socket file (if it is still ours)."""
        if not self._closed:
            self._closed = True
            try:
                info = os.stat(self._path)
            except OSError:
                pass
            else:
                # Another listener may have replaced the file since: leave theirs alone.
                if (info.st_dev, info.st_ino) == self._identity:
                    os.unlink(self._path)
        await self._listener.aclose()


async def _remove_stale_socket(path: str) -> None:
    """Unlink a socket file left by a dead process; refuse if one is alive or not a socket."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
    probe = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    with probe:
        try:
            await probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # nobody accepts on it: a leftover of a process that died
            return
    raise OSError(errno.EADDRINUSE, f"unix socket {path} is in use by a live listener")
