"""The hakit exception hierarchy: one root, names that say what happened.

Protocol errors split as in h11: a `LocalProtocolError` is our own misuse of the protocol, a
`RemoteProtocolError` is the peer's fault. A remote protocol error ends that one connection,
never the node.
"""

from __future__ import annotations

from ._stop import StopReason


class HakitError(Exception):
    """Base class of every error hakit raises on purpose."""


class InvalidArgumentError(HakitError, ValueError):
    """A call got an argument it cannot accept (bad flag, negative timeout, second answer...)."""


class TransactionTooLargeError(InvalidArgumentError):
    """A transaction is larger than a replica can ever receive; nothing was committed.

    A committed transaction must fit in one replication frame, or no replica could ever
    sync it. Split the write into several transactions, or raise ``max_frame_size`` on
    every node.

    Attributes:
        size: the transaction's size in bytes, packed as it is sent.
        limit: the largest size a transaction may have.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"transaction of {size} bytes exceeds the largest replicable transaction, "
            f"{limit} bytes (the nodes' max_frame_size less framing): nothing was "
            "committed; split it into smaller transactions"
        )
        self.size = size
        self.limit = limit


class ProtocolError(HakitError):
    """The replication or channel protocol was violated."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow in the current state."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow (garbage, oversized, out of order).

    Attributes:
        stop_reason: the stop reason a replica reports when this error ends its link.
    """

    def __init__(
        self, message: str, *, stop_reason: StopReason = StopReason.CONNECTION_ABORTED
    ) -> None:
        super().__init__(message)
        self.stop_reason = stop_reason


class ReplicationError(HakitError):
    """A replica could not attach to its master.

    Attributes:
        stop_reason: why the replica stopped.
        address: the master's connection string, when known.
    """

    def __init__(
        self, message: str, *, stop_reason: StopReason, address: str | None = None
    ) -> None:
        super().__init__(message)
        self.stop_reason = stop_reason
        self.address = address


class NetworkTimeoutError(ReplicationError, TimeoutError):
    """The peer was not reached, or did not finish the exchange, within the timeout."""


class HAProtocolError(ReplicationError):
    """The master refused the replica: incompatible protocol, cluster or identity."""


class HAIOError(ReplicationError):
    """Sending to or receiving from the master failed before the replica was attached."""


class NotMasterError(HakitError):
    """A write was attempted on a node that is not the master.

    Attributes:
        master_address: the current master's address, when this node knows it.
    """

    def __init__(self, message: str, *, master_address: str | None = None) -> None:
        if master_address is not None:
            message = f"{message} (the master is at {master_address})"
        super().__init__(message)
        self.master_address = master_address


class NoQuorumError(HakitError):
    """Too few replicas are attached for the master's quorum; nothing was changed.

    Attributes:
        attached: how many replicas were attached.
        quorum: how many the master requires.
    """

    def __init__(self, attached: int, quorum: int) -> None:
        super().__init__(
            f"only {attached} replica(s) attached, the quorum is {quorum}: "
            "the transaction was not committed"
        )
        self.attached = attached
        self.quorum = quorum


class CommitFailedError(HakitError):
    """A commit could not be confirmed: treat its outcome as unknown.

    Raised when a synchronous commit ended with fewer acknowledgements than
    `MasterParams.quorum`, or the master stepped down (proof of a newer history) while the
    commit waited. The transaction is in the master's database and may reach replicas, but
    nothing promises it survives a failover. `txid` is its id, if it got one.
    """

    def __init__(self, message: str, *, txid: int | None = None) -> None:
        super().__init__(message)
        self.txid = txid


class KilledByReplicaError(HakitError):
    """A replica took over as the master (force master); this node stepped down.

    Attributes:
        new_master: the name of the node that became the master.
        address: its address, where it now serves replicas.
        generation: the generation under which it accepts writes.
    """

    def __init__(self, new_master: str, address: str | None, generation: int) -> None:
        super().__init__(
            f"replica {new_master!r} took over as master (generation {generation}"
            + (f", serving at {address})" if address else ")")
        )
        self.new_master = new_master
        self.address = address
        self.generation = generation


class NodeClosedError(HakitError):
    """The node was closed while the call was in progress, or before it was made."""


class ChannelError(HakitError):
    """A message channel could not deliver a message or bring back its answer.

    Attributes:
        target: the address (or node name) the message was sent to, when known.
    """

    def __init__(self, message: str, *, target: str | None = None) -> None:
        super().__init__(message)
        self.target = target


class NoServerError(ChannelError):
    """The receiving node has no message handler (see `Node.set_msg_dispatch`)."""


class BufferSmallError(ChannelError):
    """The answer does not fit what the request accepts.

    Either it has several parts and the request did not pass ``multiple=True``, or it is
    larger than the request's ``max_response_bytes``. The responder's ``respond`` raised
    `InvalidArgumentError` and sent this error instead of the answer.

    Attributes:
        parts: how many parts the refused answer had, when known.
        size: its size in bytes, when known.
        limit: the request's ``max_response_bytes``, if it set one.
    """

    def __init__(
        self,
        message: str,
        *,
        target: str | None = None,
        parts: int | None = None,
        size: int | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(message, target=target)
        self.parts = parts
        self.size = size
        self.limit = limit


class ChannelTimeoutError(ChannelError, TimeoutError):
    """No answer came within the request's timeout; an answer arriving later is dropped.

    Attributes:
        timeout: the timeout that expired, in seconds.
    """

    def __init__(self, message: str, *, target: str | None = None, timeout: float) -> None:
        super().__init__(message, target=target)
        self.timeout = timeout


class UnavailableError(ChannelError):
    """The message found no node to take it.

    No master is known (`EID_MASTER`), the target cannot be reached, or the connection died
    while a request waited for its answer.
    """


class NoResponseError(ChannelError):
    """The remote handler returned without answering the request."""


class RemoteHandlerError(ChannelError):
    """The remote handler raised an exception instead of answering.

    Attributes:
        exc_type: the name of the exception's class, e.g. ``"KeyError"``.
        exc_message: the exception's message (``str(exc)``).
    """

    def __init__(self, exc_type: str, exc_message: str, *, target: str | None = None) -> None:
        where = f" at {target}" if target else ""
        text = f"{exc_type}: {exc_message}" if exc_message else exc_type
        super().__init__(f"the message handler{where} raised {text}", target=target)
        self.exc_type = exc_type
        self.exc_message = exc_message
