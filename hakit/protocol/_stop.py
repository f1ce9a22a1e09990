"""Why a replica stopped: the `StopReason` enum.

Values 0-5 are those of the reference HA system, so logs read the same; 6 is hakit's own.
"""

from __future__ import annotations

import enum


class StopReason(enum.IntEnum):
    """Why `attach_master` stopped applying the master's transaction stream."""

    #: The link was lost: an I/O error, a dead peer, or a master silent past ``wait_data_timeout``.
    CONNECTION_ABORTED = 0
    #: The master detached this replica or stopped replication.
    MASTER_REQUESTED_DISCONNECT = 1
    #: Protocol version, cluster name or replica identity was refused during the handshake.
    HANDSHAKE_FAILED = 2
    #: The replica's own application asked it to stop (``replica_stop()``).
    STOPPED_BY_LOCAL_REQUEST = 3
    #: ``FORCE_MASTER`` completed: this node has taken over as the master.
    BECOMES_MASTER = 4
    #: The replica's per-transaction callback raised.
    ITERATOR_ERROR = 5
    #: ``cancel()`` interrupted the replica at once (a hakit addition).
    CANCELLED = 6

    def __str__(self) -> str:
        # An IntEnum prints as its number since Python 3.11; a stop reason reads as its name.
        return self.name

    def __format__(self, format_spec: str) -> str:
        return format(self.name, format_spec)

    def describe(self) -> str:
        """Return a one-line explanation of this stop reason, in plain words."""
        return _DESCRIPTIONS[self]

    @property
    def is_clean(self) -> bool:
        """Whether the stop was asked for by someone rather than caused by a failure."""
        return self in _CLEAN


_DESCRIPTIONS = {
    StopReason.CONNECTION_ABORTED: (
        "The connection to the master was lost (network error, dead peer, or the master "
        "stayed silent longer than wait_data_timeout)."
    ),
    StopReason.MASTER_REQUESTED_DISCONNECT: (
        "The master detached this replica or stopped replication."
    ),
    StopReason.HANDSHAKE_FAILED: (
        "The master refused the handshake: wrong protocol version, cluster name, "
        "or a replica identity it cannot accept."
    ),
    StopReason.STOPPED_BY_LOCAL_REQUEST: (
        "The replica was stopped on request of its own application (replica_stop)."
    ),
    StopReason.BECOMES_MASTER: (
        "Force master completed: this replica caught up, stepped the old master down, "
        "and is now the master."
    ),
    StopReason.ITERATOR_ERROR: (
        "The replica's per-transaction callback (on_transaction) raised an exception."
    ),
    StopReason.CANCELLED: "Replication was cancelled immediately by a cancel request.",
}

_CLEAN = frozenset(
    {
        StopReason.MASTER_REQUESTED_DISCONNECT,
        StopReason.STOPPED_BY_LOCAL_REQUEST,
        StopReason.BECOMES_MASTER,
        StopReason.CANCELLED,
    }
)
