"""Who may talk to a node: the cluster secret and TLS, applied to every link.

Every connection a node opens or accepts (replication, message channels, cancel points, the
control service) goes through `open_secure` or `accept_secure`: TLS first when configured
(TCP only), then the challenge-response of `hakit.protocol._auth` when the node has a
cluster secret. Only then does the first protocol frame travel, so a peer without the secret
receives nothing but a nonce and the refusal.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import ssl
import warnings
from dataclasses import dataclass
from typing import Any

import trio

from ..protocol import DecodeLimits, HAProtocolError, RemoteProtocolError, StopReason
from ..protocol import _auth as auth
from ..transports import (
    FramedStream,
    SimulatedNetwork,
    TcpAddress,
    TlsStream,
    connect,
    parse_address,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS for a node's TCP links: the context it listens with and the one it dials with.

    Certificates are verified by default (`ssl.create_default_context`). For mutual TLS the
    server context requires client certificates and the client context carries one; the
    simplest way to get both right is `TlsConfig.from_files`.

    Attributes:
        server: the context accepted TCP connections speak TLS with (None: plain TCP).
        client: the context outgoing TCP connections speak TLS with (None: plain TCP).
    """

    server: ssl.SSLContext | None = None
    client: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        for side in ("server", "client"):
            value = getattr(self, side)
            if value is not None and not isinstance(value, ssl.SSLContext):
                raise TypeError(f"TlsConfig.{side} must be an ssl.SSLContext, not {value!r}")
        if self.server is not None and self.server.check_hostname:
            raise ValueError("TlsConfig.server has check_hostname set: it is a client context")

    @classmethod
    def from_files(
        cls, *, cert: str | None = None, key: str | None = None, ca: str | None = None
    ) -> TlsConfig:
        """Build both contexts from PEM files, as ``hakit node --tls-cert/--tls-key/--tls-ca``.

        Args:
            cert: this node's certificate chain: it serves TLS with it, and presents it
                when it dials a node that asks for one (mutual TLS).
            key: the private key of `cert` (default: in the `cert` file).
            ca: the certificate authority peers' certificates must chain to (default: the
                system's). With `cert` as well, accepted connections must present a
                certificate from it too: mutual TLS.

        Returns:
            A config that listens with TLS if `cert` is given and always dials with TLS.

        Raises:
            ValueError: `key` without `cert`.
            OSError, ssl.SSLError: a file is missing or not a valid PEM file.
        """
        if key is not None and cert is None:
            raise ValueError("a TLS key needs its certificate (cert=, --tls-cert)")
        server = None
        if cert is not None:
            server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server.load_cert_chain(cert, key)
            if ca is not None:
                server.load_verify_locations(ca)
                server.verify_mode = ssl.CERT_REQUIRED
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        if cert is not None:
            client.load_cert_chain(cert, key)
        return cls(server=server, client=client)


@dataclass(frozen=True, slots=True)
class Security:
    """A node's link security: its cluster secret (checked) and its TLS contexts."""

    secret: bytes | None = None
    tls: TlsConfig | None = None

    @classmethod
    def make(cls, secret: bytes | str | None, tls: TlsConfig | None) -> Security:
        """Validate the arguments users pass to `open_node` and friends.

        Raises:
            TypeError, ValueError: a bad secret or TLS config (see `check_secret`).
        """
        if tls is not None and not isinstance(tls, TlsConfig):
            raise TypeError(f"tls must be a hakit.TlsConfig, not {type(tls).__name__}")
        return cls(None if secret is None else auth.check_secret(secret), tls)

    @property
    def server_ssl(self) -> ssl.SSLContext | None:
        """The context to listen with, if any."""
        return self.tls.server if self.tls is not None else None

    @property
    def client_ssl(self) -> ssl.SSLContext | None:
        """The context to dial with, if any."""
        return self.tls.client if self.tls is not None else None


NO_SECURITY = Security()


class AuthenticationFailed(HAProtocolError):
    """The link was refused (or refused the peer) during the authentication exchange."""


async def open_secure(
    address: str,
    security: Security,
    *,
    network: SimulatedNetwork | None = None,
    source: str | None = None,
    max_frame_size: int,
    receive_size: int = 256 * 1024,
    limits: DecodeLimits | None = None,
) -> FramedStream:
    """Connect, speak TLS if configured, and authenticate if the node has a secret.

    Returns:
        The framed stream, ready for the first protocol frame (the caller owns it).

    Raises:
        AuthenticationFailed: the peer refused our proof, or failed to give its own
            (stop reason `HANDSHAKE_FAILED`).
        OSError, EOFError, trio.BrokenResourceError, RemoteProtocolError: as `connect` and
            `FramedStream.receive` raise them.
    """
    stream = await connect(address, network=network, source=source, ssl_context=security.client_ssl)
    framed = FramedStream(
        stream, max_frame_size=max_frame_size, receive_size=receive_size, limits=limits
    )
    if security.secret is None:
        return framed
    try:
        client = auth.ClientAuth(security.secret, secrets.token_bytes(auth.NONCE_SIZE))
        await framed.send(client.hello())
        while True:
            values = await framed.receive()
            for index, value in enumerate(values):
                step = client.receive(value)
                if step.failed is not None:
                    raise AuthenticationFailed(
                        f"authentication with {address} failed: {step.failed}",
                        stop_reason=StopReason.HANDSHAKE_FAILED, address=address,
                    )  # fmt: skip
                if step.send is not None:
                    await framed.send(step.send)
                if step.done:
                    if index + 1 < len(values):
                        raise RemoteProtocolError("sent more before the link was authenticated")
                    return framed
    except BaseException:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(framed.stream)
        raise


async def accept_secure(framed: FramedStream, security: Security) -> tuple[list[Any], str | None]:
    """The accepting side: TLS handshake, authentication, then the peer's first frames.

    Runs under the caller's timeout. On a refusal the refusal frame has been sent (best
    effort); the caller records it and closes the stream.

    Returns:
        ``(values, None)``: the first protocol frames, once the peer is authenticated;
        ``([], reason)``: the peer was refused.

    Raises:
        OSError, EOFError, trio.BrokenResourceError, RemoteProtocolError: the peer broke
            the connection or sent garbage (a failed TLS handshake is a
            `trio.BrokenResourceError`).
    """
    stream = framed.stream
    if isinstance(stream, TlsStream):
        await stream.do_handshake()
    values = await framed.receive()
    if security.secret is None:
        if values and auth.is_auth_frame(values[0]):
            await _send_refusal(framed, auth.refuse_auth_hello())
            return [], auth.NO_SECRET_HERE
        return values, None
    server = auth.ServerAuth(security.secret, secrets.token_bytes(auth.NONCE_SIZE))
    while True:
        for index, value in enumerate(values):
            step = server.receive(value)
            if step.failed is not None:
                if step.send is not None:
                    await _send_refusal(framed, step.send)
                return [], step.failed
            if step.send is not None:
                await framed.send(step.send)
            if step.done:
                rest = values[index + 1 :]
                if rest:
                    raise RemoteProtocolError("sent more before the link was authenticated")
                return await framed.receive(), None
        values = await framed.receive()


async def _send_refusal(framed: FramedStream, frame: bytes) -> None:
    with trio.move_on_after(1.0):
        with contextlib.suppress(OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            await framed.send(frame)


def is_loopback(bound: str) -> bool:
    """Whether a bound address can only be reached from this host (unix, mem:, loopback)."""
    target = parse_address(bound)
    if not isinstance(target, TcpAddress):
        return True
    if target.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(target.host).is_loopback
    except ValueError:
        return False


class InsecureListenerWarning(UserWarning):
    """A node without a cluster secret listens where other hosts can reach it."""


def warn_if_exposed(node_name: str, bound: str, security: Security) -> bool:
    """Warn (once per node: the caller remembers) when an open node listens beyond loopback.

    Returns:
        Whether a warning was given.
    """
    if security.secret is not None or is_loopback(bound):
        return False
    warnings.warn(
        f"node {node_name!r} listens on {bound} without a cluster secret: anyone who can "
        "reach it can read the whole database or take the master over; give it a secret "
        "(--secret-file, secret=)",
        InsecureListenerWarning,
        stacklevel=3,
    )
    return True
