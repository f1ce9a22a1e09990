"""The sans-I/O core of hakit: messages, framing, handshake and state machines.

Nothing here performs I/O or reads a clock: callers feed bytes and messages in, pass the time
as ``now``, and act on the events that come out. It imports only the standard library and
msgpack, so it can be driven by any event loop, or by a test with no loop at all.
"""

from ._channel import (
    DEFAULT_CHANNEL_TIMEOUT,
    MAX_CHANNEL_TIMEOUT,
    ChannelFailCode,
    ChannelFlags,
    ChannelMachine,
    ChannelState,
    check_answer,
    decide_channel_hello,
)
from ._codec import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame
from ._errors import (
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
    UnavailableError,
)
from ._master import LinkState, MasterLinkMachine, MasterView, decide_handshake, plan_sync
from ._messages import PROTOCOL_VERSION, Kind, Message, SyncKind, parse_message
from ._replica import ReplicaMachine, ReplicaState
from ._stop import StopReason

__all__ = [
    "DEFAULT_CHANNEL_TIMEOUT",
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_CHANNEL_TIMEOUT",
    "PROTOCOL_VERSION",
    "BufferSmallError",
    "ChannelError",
    "ChannelFailCode",
    "ChannelFlags",
    "ChannelMachine",
    "ChannelState",
    "ChannelTimeoutError",
    "CommitFailedError",
    "FrameDecoder",
    "HAIOError",
    "HAProtocolError",
    "HakitError",
    "InvalidArgumentError",
    "KilledByReplicaError",
    "Kind",
    "LinkState",
    "LocalProtocolError",
    "MasterLinkMachine",
    "MasterView",
    "Message",
    "NetworkTimeoutError",
    "NoQuorumError",
    "NoResponseError",
    "NoServerError",
    "NodeClosedError",
    "NotMasterError",
    "ProtocolError",
    "RemoteHandlerError",
    "RemoteProtocolError",
    "ReplicaMachine",
    "ReplicaState",
    "ReplicationError",
    "StopReason",
    "SyncKind",
    "UnavailableError",
    "check_answer",
    "decide_channel_hello",
    "decide_handshake",
    "encode_frame",
    "parse_message",
    "plan_sync",
]
