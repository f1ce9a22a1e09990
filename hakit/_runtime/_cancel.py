"""`hakit.cancel`: interrupt a replica from anywhere, through its cancel point."""

from __future__ import annotations

from ..protocol import (
    HAIOError,
    HAProtocolError,
    InvalidArgumentError,
    RemoteProtocolError,
    StopReason,
)
from ..protocol import _messages as m
from ._cluster import Cluster
from ._dial import dial
from ._security import Security, TlsConfig


async def cancel(
    cancel_address: str,
    *,
    timeout: float = 5.0,
    cluster: Cluster | None = None,
    secret: bytes | str | None = None,
    tls: TlsConfig | None = None,
) -> None:
    """Cancel the replication of the replica whose cancel point is at `cancel_address`.

    The replica opened the cancel point with `ReplicaMode.ALLOW_CANCEL`; its `attach_master`
    returns `StopReason.CANCELLED`. This returns once the replica confirmed.

    Args:
        cancel_address: the replica's `ReplicaParams.cancel_address`.
        timeout: seconds to wait for the confirmation.
        cluster: the cluster whose simulated network carries a ``mem:`` address (its
            secret is used unless `secret` is given).
        secret: the cluster secret, when the replica's node has one.
        tls: TLS for a TCP cancel point (see `hakit.TlsConfig`).

    Raises:
        NetworkTimeoutError: the cancel point did not answer within `timeout`.
        HAIOError: the cancel point could not be reached, or had nothing to cancel.
        HAProtocolError: the authentication failed (`HANDSHAKE_FAILED`).
    """
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise InvalidArgumentError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if secret is None and cluster is not None:
        secret = cluster.secret
    security = Security.make(secret, tls)
    framed, values = await dial(
        cancel_address,
        m.Cancel(0, "").encode(),
        timeout=timeout,
        peer=f"cancel point {cancel_address}",
        stop_reason=StopReason.CANCELLED,
        network=cluster.network if cluster is not None else None,
        security=security,
    )
    async with framed:
        try:
            reply = m.parse_message(values[0])
        except RemoteProtocolError as exc:
            raise HAIOError(
                f"cancel point {cancel_address} answered with garbage: {exc}",
                stop_reason=StopReason.CANCELLED, address=cancel_address,
            ) from None  # fmt: skip
    if isinstance(reply, m.Reject) and reply.stop_reason == StopReason.HANDSHAKE_FAILED:
        raise HAProtocolError(
            f"cancel point {cancel_address} refused: {reply.detail}",
            stop_reason=StopReason.HANDSHAKE_FAILED, address=cancel_address,
        )  # fmt: skip
    if not isinstance(reply, m.Bye):
        detail = reply.detail if isinstance(reply, m.Reject) else type(reply).__name__
        raise HAIOError(
            f"cancel point {cancel_address} refused: {detail}",
            stop_reason=StopReason.CANCELLED, address=cancel_address,
        )  # fmt: skip
