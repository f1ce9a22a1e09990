"""Open a connection with a first exchange: what a replica attaching and `hakit.cancel` share."""

from __future__ import annotations

import ssl
from typing import Any

import trio

from ..protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    HAIOError,
    NetworkTimeoutError,
    RemoteProtocolError,
    StopReason,
)
from ..transports import FramedStream, SimulatedNetwork
from ._security import NO_SECURITY, AuthenticationFailed, Security, open_secure

#: A failed connect (nothing listens, no route, a partition): nobody there (yet).
_UNREACHABLE = (OSError,)
#: The connection was lost, or the peer sent garbage, after it was made; or our own end was
#: closed under us (a crash of this node closes its streams: `attach_master` then tells it).
_IO_ERRORS = (
    OSError, EOFError, trio.BrokenResourceError, trio.ClosedResourceError, RemoteProtocolError
)  # fmt: skip


async def dial(
    address: str,
    first: bytes,
    *,
    timeout: float,
    peer: str,
    stop_reason: StopReason,
    network: SimulatedNetwork | None = None,
    source: str | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    security: Security = NO_SECURITY,
    unreachable: type[HAIOError] = HAIOError,
) -> tuple[FramedStream, list[Any]]:
    """Connect to `address`, send the frame `first` and wait for the peer's first frames.

    Args:
        address: where to connect.
        first: the opening frame, already encoded.
        timeout: seconds for the whole exchange.
        peer: the peer as the errors name it ("the master at ...").
        stop_reason: the stop reason the errors carry.
        network: the simulated network of a ``mem:`` address.
        source: this node's name on the simulated network.
        max_frame_size: the largest frame accepted from the peer.
        security: the cluster secret and TLS the link uses (see `open_secure`).
        unreachable: the `HAIOError` class raised when the connection could not be made
            at all (a caller that waits for the peer tells that apart).

    Returns:
        The open stream (the caller owns it from now on) and the decoded frames that came.

    Raises:
        NetworkTimeoutError: the peer did not answer within `timeout`.
        HAIOError: the peer could not be reached, closed the connection, or sent garbage.
        HAProtocolError: the authentication failed, either way (`HANDSHAKE_FAILED`).
    """
    framed: FramedStream | None = None
    try:
        with trio.fail_after(timeout):
            framed = await open_secure(
                address,
                security,
                network=network,
                source=source,
                max_frame_size=max_frame_size,
            )
            await framed.send(first)
            return framed, await framed.receive()
    except BaseException as exc:
        if framed is not None:
            with trio.CancelScope(shield=True):
                await framed.aclose()
        if isinstance(exc, trio.TooSlowError):
            raise NetworkTimeoutError(
                f"{peer} did not answer within {timeout:g} s",
                stop_reason=stop_reason, address=address,
            ) from None  # fmt: skip
        if isinstance(exc, AuthenticationFailed):
            raise
        if isinstance(exc, _IO_ERRORS):
            why = str(exc) or str(exc.__cause__ or type(exc).__name__)  # TLS: in the cause
            # A peer that accepted and then closed, or failed TLS, refused on purpose:
            # waiting would not change that. Only a failed connect is worth waiting out.
            nobody = isinstance(exc, _UNREACHABLE) and not isinstance(exc, ssl.SSLError)
            error = unreachable if nobody else HAIOError
            raise error(
                f"could not reach {peer}: {why}", stop_reason=stop_reason, address=address
            ) from None
        raise
