"""Connection strings: parsing and the canonical form of each transport's address.

Accepted forms (DESIGN section 3):

* ``"host:port"``: TCP to an IPv4 address or a host name; ``"[v6]:port"``: TCP over IPv6.
* ``"/path/name"`` or ``"unix:/path/name"``: a unix domain socket (``"unix:relative/name"``
  is accepted too, relative to the current directory).
* ``"mem:name"``: the in-kernel memory transport of one cluster, routed through its
  simulated network.

``str(address)`` gives the canonical string, which `parse_address` reads back to an equal
address, so addresses can be shown, logged and compared as text.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TypeAlias

from hakit.protocol import InvalidArgumentError

_ACCEPTED_FORMS = '"host:port", "[v6]:port", "/path" or "unix:/path", or "mem:name"'

# RFC 1123 host names, plus "_" which container and service-discovery names use in practice.
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_NUMERIC_HOST = re.compile(r"[0-9.]+")
_PORT = re.compile(r"[0-9]{1,5}")


def _bad(text: str, why: str) -> InvalidArgumentError:
    # InvalidArgumentError is a ValueError too: `except ValueError` keeps working.
    return InvalidArgumentError(f"bad address {_quote(text)} ({why}): expected {_ACCEPTED_FORMS}")


def _quote(text: str) -> str:
    # Double quotes like the accepted forms in the message; repr only when the text holds
    # characters (quotes, control characters) that would make the message ambiguous.
    if '"' in text or not text.isprintable():
        return repr(text)
    return f'"{text}"'


@dataclass(frozen=True, slots=True)
class TcpAddress:
    """A TCP endpoint.

    Attributes:
        host: an IPv4 address, an IPv6 address (without brackets) or a host name.
        port: the port, 0 to 65535 (0 asks the system for a free port when listening).
    """

    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("TcpAddress.host must not be empty")
        if isinstance(self.port, bool) or not 0 <= self.port <= 65535:
            raise ValueError(f"TcpAddress.port must be 0..65535, not {self.port!r}")

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class UnixAddress:
    """A unix domain socket.

    Attributes:
        path: the socket file's path; absolute unless given as ``"unix:relative/path"``.
    """

    path: str

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("UnixAddress.path must not be empty")

    def __str__(self) -> str:
        # A relative path keeps its prefix: without it the string would not parse back.
        return self.path if self.path.startswith("/") else f"unix:{self.path}"


@dataclass(frozen=True, slots=True)
class MemoryAddress:
    """An endpoint of the in-kernel memory transport, named in a cluster's simulated network.

    Attributes:
        name: the listener's name, usually the node's name.
    """

    name: str

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("MemoryAddress.name must not be empty")

    def __str__(self) -> str:
        return f"mem:{self.name}"


#: Any address a hakit transport can connect to or listen on.
Address: TypeAlias = TcpAddress | UnixAddress | MemoryAddress


def parse_address(text: str) -> Address:
    """Parse a connection string into an address.

    Args:
        text: ``"host:port"``, ``"[v6]:port"``, ``"/path/name"``, ``"unix:/path/name"`` or
            ``"mem:name"``.

    Returns:
        The `TcpAddress`, `UnixAddress` or `MemoryAddress` it names.

    Raises:
        InvalidArgumentError: the string is malformed (also a `ValueError`); the message
            quotes it and names the accepted forms.
    """
    if not isinstance(text, str):
        raise TypeError(f"an address must be a str, not {type(text).__name__}")
    if not text:
        raise _bad(text, "empty")
    if text != text.strip() or not text.isprintable():
        raise _bad(text, "contains whitespace or control characters")
    scheme, sep, _rest = text.partition("://")
    if sep:
        raise _bad(text, f'"{scheme}://" URLs are not a supported form')
    if text.startswith("mem:"):
        name = text[4:]
        if not name:
            raise _bad(text, "empty name")
        return MemoryAddress(name)
    if text.startswith("unix:"):
        return _unix(text, text[5:])
    if text.startswith("/"):
        return _unix(text, text)
    return _tcp(text)


def _unix(text: str, path: str) -> UnixAddress:
    if not path:
        raise _bad(text, "empty path")
    if path.endswith("/"):
        raise _bad(text, "the path names a directory, not a socket file")
    return UnixAddress(path)


def _tcp(text: str) -> TcpAddress:
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise _bad(text, 'missing "]"')
        host = text[1:close]
        rest = text[close + 1 :]
        if not rest.startswith(":"):
            raise _bad(text, 'expected ":port" after "]"')
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _bad(text, f"{host!r} is not an IPv6 address") from None
        return TcpAddress(host, _port(text, rest[1:]))
    host, colon, port = text.rpartition(":")
    if not colon:
        raise _bad(text, "no port")
    if not host:
        raise _bad(text, "empty host")
    if ":" in host:
        raise _bad(text, "an IPv6 address needs brackets")
    if _NUMERIC_HOST.fullmatch(host):
        # All digits and dots can only be meant as IPv4; "999.1.1.1" must not pass as a name.
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise _bad(text, f"{host!r} is not an IPv4 address") from None
    elif not _is_host_name(host):
        raise _bad(text, f"{host!r} is not a host name")
    return TcpAddress(host, _port(text, port))


def _is_host_name(host: str) -> bool:
    name = host[:-1] if host.endswith(".") else host  # a fully qualified name may end in "."
    if not name or len(name) > 253:
        return False
    return all(_LABEL.fullmatch(label) for label in name.split("."))


def _port(text: str, port: str) -> int:
    if not port:
        raise _bad(text, "empty port")
    if not _PORT.fullmatch(port):
        raise _bad(text, f"port {port!r} is not a number from 0 to 65535")
    value = int(port)
    if value > 65535:
        raise _bad(text, f"port {value} is out of range 0..65535")
    return value
