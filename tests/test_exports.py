"""The public API of `hakit` is small, curated and pinned: changing it is a decision."""

from __future__ import annotations

import hakit

PUBLIC = {
    # nodes and clusters
    "open_node", "open_cluster", "Node", "Cluster", "Transaction", "Role", "cancel",
    # parameters and results
    "MasterParams", "MasterMode", "AckPolicy", "ReplicaParams", "ReplicaMode", "Notification",
    "NodeLimits",
    "CommitResult", "ReplicaInfo", "TransactionRecord", "StopReason", "DiscardedTransactions",
    # storage
    "Storage", "MemoryStorage", "SqliteStorage",
    # statistics
    "NodeStatistics", "LinkStatistics", "ClusterStatistics", "ChannelStatistics",
    # events
    "Event", "RoleChanged", "Connected", "ReplicaSynced", "ReplicaStopped", "ReplicaDetached",
    "MasterChanged", "ConnectionRefused", "CommitFailed", "HistoryDiverged", "ChannelConnected",
    "ChannelDisconnected", "ChannelHandlerFailed", "ChannelRequestTimedOut",
    "ChannelUnavailable", "EventLog", "MessageEvent", "NetworkChanged", "NodeCrashed",
    "NodeRestarted",
    # link security
    "TlsConfig", "InsecureListenerWarning",
    # nodes in child processes
    "spawn_node", "NodeProcess",
    # message channels
    "Channel", "ChannelMessage", "EID_MASTER",
    # errors
    "HakitError", "InvalidArgumentError", "TransactionTooLargeError", "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError", "ReplicationError", "NetworkTimeoutError", "HAProtocolError",
    "HAIOError", "NotMasterError", "NoQuorumError", "CommitFailedError", "KilledByReplicaError",
    "NodeClosedError", "ChannelError", "NoServerError", "BufferSmallError",
    "ChannelTimeoutError", "UnavailableError", "NoResponseError", "RemoteHandlerError",
    "__version__",
}  # fmt: skip


def test_public_names_are_pinned() -> None:
    assert set(hakit.__all__) == PUBLIC
    assert len(hakit.__all__) == len(set(hakit.__all__))


def test_every_public_name_exists_and_claims_the_hakit_module() -> None:
    for name in hakit.__all__:
        obj = getattr(hakit, name)
        if isinstance(obj, type):
            assert obj.__module__ == "hakit", name


def test_public_callables_and_classes_are_documented() -> None:
    for name in hakit.__all__:
        obj = getattr(hakit, name)
        if callable(obj):
            assert obj.__doc__ and obj.__doc__.strip(), name
