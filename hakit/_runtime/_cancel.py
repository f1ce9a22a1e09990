"""`hakit.cancel`: interrupt a replica from anywhere, through its cancel point."""

from __future__ import annotations

from ..protocol import (
    HAIOError,
    InvalidArgumentError,
    RemoteProtocolError,
    StopReason,
)
from ..protocol import _messages as m
from ._cluster import Cluster
from ._dial import dial


async def cancel(
    cancel_address: str, *, timeout: float = 5.0, cluster: Cluster | None = None
) -> None:
    """Cancel the replication of the replica whose cancel point is at `cancel_address`.

    The replica opened the cancel point with `ReplicaMode.ALLOW_CANCEL`; its `attach_master`
    returns `StopReason.CANCELLED`. This returns once the replica confirmed.

    Args:
        cancel_address: the replica's `ReplicaParams.cancel_address`.
        timeout: seconds to wait for the confirmation.
        cluster: the cluster whose simulated network carries a ``mem:`` address.

    Raises:
        NetworkTimeoutError: the cancel point did not answer within `timeout`.
        HAIOError: the cancel point could not be reached, or had nothing to cancel.
    """
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise InvalidArgumentError(f"timeout must be a positive number of seconds, got {timeout!r}")
    framed, values = await dial(
        cancel_address,
        m.Cancel(0, "").encode(),
        timeout=timeout,
        peer=f"cancel point {cancel_address}",
        stop_reason=StopReason.CANCELLED,
        network=cluster.network if cluster is not None else None,
    )
    async with framed:
        try:
            reply = m.parse_message(values[0])
        except RemoteProtocolError as exc:
            raise HAIOError(
                f"cancel point {cancel_address} answered with garbage: {exc}",
                stop_reason=StopReason.CANCELLED, address=cancel_address,
            ) from None  # fmt: skip
    if not isinstance(reply, m.Bye):
        detail = reply.detail if isinstance(reply, m.Reject) else type(reply).__name__
        raise HAIOError(
            f"cancel point {cancel_address} refused: {detail}",
            stop_reason=StopReason.CANCELLED, address=cancel_address,
        )  # fmt: skip
