"""`hakit.cancel`: interrupt a replica from anywhere, through its cancel point."""

from __future__ import annotations

import trio

from ..protocol import (
    HAIOError,
    InvalidArgumentError,
    NetworkTimeoutError,
    RemoteProtocolError,
    StopReason,
)
from ..protocol import _messages as m
from ..transports import FramedStream, connect
from ._cluster import Cluster


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
    network = cluster.network if cluster is not None else None
    try:
        with trio.fail_after(timeout):
            stream = await connect(cancel_address, network=network)
            async with FramedStream(stream) as framed:
                await framed.send(m.Cancel(0, "").encode())
                reply = m.parse_message((await framed.receive())[0])
    except trio.TooSlowError:
        raise NetworkTimeoutError(
            f"cancel point {cancel_address} did not answer within {timeout:g} s",
            stop_reason=StopReason.CANCELLED, address=cancel_address,
        ) from None  # fmt: skip
    except (OSError, EOFError, trio.BrokenResourceError, RemoteProtocolError) as exc:
        raise HAIOError(
            f"could not reach cancel point {cancel_address}: {exc}",
            stop_reason=StopReason.CANCELLED, address=cancel_address,
        ) from None  # fmt: skip
    if not isinstance(reply, m.Bye):
        detail = reply.detail if isinstance(reply, m.Reject) else type(reply).__name__
        raise HAIOError(
            f"cancel point {cancel_address} refused: {detail}",
            stop_reason=StopReason.CANCELLED, address=cancel_address,
        )  # fmt: skip
