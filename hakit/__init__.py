"""hakit: explore, teach and run high-availability database replication.

General layout (trio style): implementation lives in private modules and subpackages; the
names below are the whole public API, re-exported here and pinned by a test.

* `hakit.protocol`: the sans-I/O core (messages, framing, state machines).
* `hakit.storage`: the node's database (`MemoryStorage`, `SqliteStorage`).
* `hakit.transports`: trio streams over ``mem:``, TCP and unix sockets.
* the runtime: `open_node`, `open_cluster`, `Node`, `Cluster`, parameters and events.
"""

from __future__ import annotations

from ._runtime._cancel import cancel
from ._runtime._channels import EID_MASTER, Channel, ChannelMessage
from ._runtime._cluster import Cluster, ClusterStatistics, open_cluster
from ._runtime._events import (
    ChannelConnected,
    ChannelDisconnected,
    ChannelHandlerFailed,
    ChannelRequestTimedOut,
    ChannelUnavailable,
    CommitFailed,
    Connected,
    ConnectionRefused,
    Event,
    EventLog,
    HistoryDiverged,
    MasterChanged,
    MessageEvent,
    NetworkChanged,
    NodeCrashed,
    NodeRestarted,
    ReplicaDetached,
    ReplicaStopped,
    ReplicaSynced,
    RoleChanged,
)
from ._runtime._node import Node, Transaction, open_node
from ._runtime._params import (
    AckPolicy,
    CommitResult,
    DiscardedTransactions,
    MasterMode,
    MasterParams,
    NodeLimits,
    Notification,
    ReplicaInfo,
    ReplicaMode,
    ReplicaParams,
    Role,
    TransactionRecord,
)
from ._runtime._security import InsecureListenerWarning, TlsConfig
from ._runtime._spawn import NodeProcess, spawn_node
from ._runtime._statistics import ChannelStatistics, LinkStatistics, NodeStatistics
from ._version import __version__
from .protocol import (
    BufferSmallError,
    ChannelError,
    ChannelTimeoutError,
    CommitFailedError,
    HAIOError,
    HakitError,
    HAProtocolError,
    InvalidArgumentError,
    KilledByReplicaError,
    LocalProtocolError,
    NetworkTimeoutError,
    NodeClosedError,
    NoQuorumError,
    NoResponseError,
    NoServerError,
    NotMasterError,
    ProtocolError,
    RemoteHandlerError,
    RemoteProtocolError,
    ReplicationError,
    StopReason,
    TransactionTooLargeError,
    UnavailableError,
)
from .storage import MemoryStorage, SqliteStorage, Storage

__all__ = [
    "EID_MASTER",
    "AckPolicy",
    "BufferSmallError",
    "Channel",
    "ChannelConnected",
    "ChannelDisconnected",
    "ChannelError",
    "ChannelHandlerFailed",
    "ChannelMessage",
    "ChannelRequestTimedOut",
    "ChannelStatistics",
    "ChannelTimeoutError",
    "ChannelUnavailable",
    "Cluster",
    "ClusterStatistics",
    "CommitFailed",
    "CommitFailedError",
    "CommitResult",
    "Connected",
    "ConnectionRefused",
    "DiscardedTransactions",
    "Event",
    "EventLog",
    "HAIOError",
    "HAProtocolError",
    "HakitError",
    "HistoryDiverged",
    "InsecureListenerWarning",
    "InvalidArgumentError",
    "KilledByReplicaError",
    "LinkStatistics",
    "LocalProtocolError",
    "MasterChanged",
    "MasterMode",
    "MasterParams",
    "MemoryStorage",
    "MessageEvent",
    "NetworkChanged",
    "NetworkTimeoutError",
    "NoQuorumError",
    "NoResponseError",
    "NoServerError",
    "Node",
    "NodeClosedError",
    "NodeCrashed",
    "NodeLimits",
    "NodeProcess",
    "NodeRestarted",
    "NodeStatistics",
    "NotMasterError",
    "Notification",
    "ProtocolError",
    "RemoteHandlerError",
    "RemoteProtocolError",
    "ReplicaDetached",
    "ReplicaInfo",
    "ReplicaMode",
    "ReplicaParams",
    "ReplicaStopped",
    "ReplicaSynced",
    "ReplicationError",
    "Role",
    "RoleChanged",
    "SqliteStorage",
    "StopReason",
    "Storage",
    "TlsConfig",
    "Transaction",
    "TransactionRecord",
    "TransactionTooLargeError",
    "UnavailableError",
    "__version__",
    "cancel",
    "open_cluster",
    "open_node",
    "spawn_node",
]

# Public classes report themselves as hakit.X, not hakit._runtime._node.X (as trio does).
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("hakit."):
        _obj.__module__ = "hakit"
del _name, _obj
