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
from ._runtime._cluster import Cluster, ClusterStatistics, open_cluster
from ._runtime._events import (
    CommitFailed,
    Connected,
    ConnectionRefused,
    Event,
    MasterChanged,
    ReplicaDetached,
    ReplicaStopped,
    ReplicaSynced,
    RoleChanged,
)
from ._runtime._node import Node, Transaction, open_node
from ._runtime._params import (
    AckPolicy,
    CommitResult,
    MasterMode,
    MasterParams,
    Notification,
    ReplicaInfo,
    ReplicaMode,
    ReplicaParams,
    Role,
    TransactionRecord,
)
from ._runtime._statistics import LinkStatistics, NodeStatistics
from ._version import __version__
from .protocol import (
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
    NotMasterError,
    ProtocolError,
    RemoteProtocolError,
    ReplicationError,
    StopReason,
)
from .storage import MemoryStorage, SqliteStorage, Storage

__all__ = [
    "AckPolicy",
    "Cluster",
    "ClusterStatistics",
    "CommitFailed",
    "CommitFailedError",
    "CommitResult",
    "Connected",
    "ConnectionRefused",
    "Event",
    "HAIOError",
    "HAProtocolError",
    "HakitError",
    "InvalidArgumentError",
    "KilledByReplicaError",
    "LinkStatistics",
    "LocalProtocolError",
    "MasterChanged",
    "MasterMode",
    "MasterParams",
    "MemoryStorage",
    "NetworkTimeoutError",
    "NoQuorumError",
    "Node",
    "NodeClosedError",
    "NodeStatistics",
    "NotMasterError",
    "Notification",
    "ProtocolError",
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
    "Transaction",
    "TransactionRecord",
    "__version__",
    "cancel",
    "open_cluster",
    "open_node",
]

# Public classes report themselves as hakit.X, not hakit._runtime._node.X (as trio does).
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("hakit."):
        _obj.__module__ = "hakit"
del _name, _obj
