"""Byte-stream transports for hakit, on trio: TCP, unix sockets and the in-kernel network.

Every transport is reached through a connection string (DESIGN section 3), parsed by
`parse_address`: ``"host:port"`` or ``"[v6]:port"`` (TCP), ``"/path"`` or ``"unix:/path"``
(unix domain socket), ``"mem:name"`` (the in-kernel memory transport of one cluster, routed
through its `SimulatedNetwork`, which can partition, hold and delay links deterministically).
`connect` and `open_listener` open any of them and return plain `trio.abc.Stream` objects;
`FramedStream` carries hakit's length-prefixed msgpack frames over such a stream.

This package imports trio, the standard library and `hakit.protocol`, never the runtime.
"""

from ._address import Address, MemoryAddress, TcpAddress, UnixAddress, parse_address
from ._framed import FramedStream, ReceiveBudget
from ._memory import NetworkStatistics, SimulatedNetwork
from ._open import connect, open_listener
from ._tls import TlsListener, TlsStream

__all__ = [
    "Address",
    "FramedStream",
    "MemoryAddress",
    "NetworkStatistics",
    "ReceiveBudget",
    "SimulatedNetwork",
    "TcpAddress",
    "TlsListener",
    "TlsStream",
    "UnixAddress",
    "connect",
    "open_listener",
    "parse_address",
]
