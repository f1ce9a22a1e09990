"""Message channels (Berkeley DB repmgr's ``DB_CHANNEL``), sans-I/O.

A node sends application messages to another node over a connection of its own, separate
from the replication links. `ChannelMachine` is the requester's side of one such connection:
it numbers requests, remembers what each accepts (one part or several, a size limit) and
when it expires, and turns the replies that come back into outcomes. The responder's side is
stateless and lives in pure functions: `decide_channel_hello` accepts or refuses a connecting
node, `check_request` validates an incoming message, `check_answer` validates an answer
against the request's flags before it is sent (the responder refuses a bad answer locally,
and the requester gets `BufferSmallError`, as in Berkeley DB).

Time is an argument (``now``); nothing here reads a clock or touches a socket.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from ._codec import MAX_CHANNEL_PARTS
from ._errors import (
    BufferSmallError,
    ChannelError,
    ChannelTimeoutError,
    InvalidArgumentError,
    LocalProtocolError,
    NoResponseError,
    NoServerError,
    RemoteHandlerError,
    RemoteProtocolError,
    UnavailableError,
)
from ._messages import (
    PROTOCOL_VERSION,
    ChannelFail,
    ChannelHello,
    ChannelMsg,
    ChannelReply,
    Kind,
    Message,
    encode_channel_msg,
    parse_message,
)

#: The default timeout of a request, in seconds (Berkeley DB's
#: ``DB_REPMGR_DEFAULT_CHANNEL_TIMEOUT``).
DEFAULT_CHANNEL_TIMEOUT = 5.0
#: The longest timeout accepted: Berkeley DB takes an unsigned 32-bit count of microseconds,
#: about 71 minutes.
MAX_CHANNEL_TIMEOUT = (2**32 - 1) / 1_000_000

#: What callers may pass as message parts: one part, or a sequence of parts. A `str` part is
#: sent as its UTF-8 encoding.
Part: TypeAlias = bytes | bytearray | memoryview | str
Parts: TypeAlias = Part | Sequence[Part]


class ChannelFlags(enum.IntFlag):
    """Flags of a request (`ChannelMsg.flags`)."""

    NONE = 0
    MULTIPLE = 1  #: the requester accepts a multi-part answer (Berkeley DB's DB_MULTIPLE)
    LIMIT = 2  #: the answer may hold at most `ChannelMsg.limit` bytes
    #: for the node's control service (``hakit status``, ``hakit put``...), not the
    #: application's message handler
    CONTROL = 4


# Plain ints for the per-message paths: IntFlag arithmetic costs microseconds per operation.
_MULTIPLE = int(ChannelFlags.MULTIPLE)
_LIMIT = int(ChannelFlags.LIMIT)
_CONTROL = int(ChannelFlags.CONTROL)
_KNOWN_FLAGS = _MULTIPLE | _LIMIT | _CONTROL


class ChannelFailCode(enum.IntEnum):
    """Why a responder failed a request (`ChannelFail.code`)."""

    REFUSED = 1  #: the connection itself was refused (request id 0)
    NO_SERVER = 2  #: the node has no message handler
    BUFFER_SMALL = 3  #: the answer did not fit the request's flags or size limit
    NO_RESPONSE = 4  #: the handler returned without answering
    HANDLER_FAILED = 5  #: the handler raised; the detail is ``"ExcType: message"``


class ChannelState(enum.Enum):
    """The requester's view of one channel connection."""

    CONNECTING = "connecting"  #: our `ChannelHello` is sent, the peer's is awaited
    OPEN = "open"
    CLOSED = "closed"


# -- argument checks (shared by the machine and the runtime) ---------------------------------


def to_parts(parts: object, *, what: str = "message") -> list[bytes]:
    """Normalise message parts to a list of bytes.

    Args:
        parts: one part (bytes or str), or a list or tuple of parts. A `str` is encoded as
            UTF-8; bytearray and memoryview are copied to bytes.
        what: names the parts in error messages.

    Raises:
        InvalidArgumentError: a part is not bytes or str, or there are more than
            `MAX_CHANNEL_PARTS` (the receiver's decoder refuses longer arrays).
    """
    if isinstance(parts, list | tuple):
        items: Sequence[object] = parts
        if len(items) > MAX_CHANNEL_PARTS:
            raise InvalidArgumentError(
                f"a {what} has at most {MAX_CHANNEL_PARTS} parts, got {len(items)}"
            )
    else:
        items = (parts,)
    out: list[bytes] = []
    for index, part in enumerate(items):
        if isinstance(part, bytes):
            out.append(part)
        elif isinstance(part, str):
            out.append(part.encode("utf-8"))
        elif isinstance(part, bytearray | memoryview):
            out.append(bytes(part))
        else:
            where = f" (part {index})" if len(items) > 1 else ""
            raise InvalidArgumentError(
                f"{what} parts must be bytes or str, got {type(part).__name__}{where}"
            )
    return out


def check_timeout(timeout: object, *, zero_means_default: bool = True) -> float | None:
    """Validate a channel timeout in seconds.

    Args:
        timeout: the value given by the caller.
        zero_means_default: whether 0 selects the channel's default (as in
            ``send_request``); if not, 0 is refused (as in ``set_timeout``).

    Returns:
        The timeout, or None when the channel's default applies.

    Raises:
        InvalidArgumentError: not a number, negative, NaN, or longer than
            `MAX_CHANNEL_TIMEOUT`.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidArgumentError(
            f"a timeout must be a number of seconds, got {type(timeout).__name__}"
        )
    value = float(timeout)
    if math.isnan(value) or value < 0:
        raise InvalidArgumentError(f"a timeout must not be negative, got {timeout!r}")
    if value == 0:
        if zero_means_default:
            return None
        raise InvalidArgumentError("a channel's default timeout must be positive, got 0")
    if value > MAX_CHANNEL_TIMEOUT:
        raise InvalidArgumentError(
            f"a timeout may be at most {MAX_CHANNEL_TIMEOUT} s (about 71 minutes), got {timeout!r}"
        )
    return value


def check_limit(max_response_bytes: object) -> int | None:
    """Validate ``max_response_bytes`` (None: no limit).

    Raises:
        InvalidArgumentError: not an int, or negative.
    """
    if max_response_bytes is None:
        return None
    if isinstance(max_response_bytes, bool) or not isinstance(max_response_bytes, int):
        raise InvalidArgumentError(
            f"max_response_bytes must be an int or None, got {type(max_response_bytes).__name__}"
        )
    if max_response_bytes < 0:
        raise InvalidArgumentError(
            f"max_response_bytes must not be negative, got {max_response_bytes}"
        )
    return max_response_bytes


def check_answer(parts: list[bytes], flags: int, limit: int) -> None:
    """Check an answer against what its request accepts, before it is sent.

    Args:
        parts: the answer.
        flags: the request's `ChannelFlags`.
        limit: the request's size limit in bytes (used when `ChannelFlags.LIMIT` is set).

    Raises:
        InvalidArgumentError: the answer has several parts and the request did not accept
            them, or it is larger than the limit. The responder then sends the requester
            a `ChannelFailCode.BUFFER_SMALL` failure instead.
    """
    if len(parts) > 1 and not flags & _MULTIPLE:
        raise InvalidArgumentError(
            f"the answer has {len(parts)} parts but the request accepts one "
            "(the requester did not pass multiple=True)"
        )
    if flags & _LIMIT:
        size = answer_size(parts)
        if size > limit:
            raise InvalidArgumentError(
                f"the answer holds {size} bytes, more than the request's "
                f"max_response_bytes of {limit}"
            )


def answer_size(parts: list[bytes]) -> int:
    """The size of an answer, as compared with ``max_response_bytes``: its bytes, summed."""
    return sum(map(len, parts))


def check_request(msg: ChannelMsg) -> None:
    """Validate an incoming `ChannelMsg` on the responder's side.

    Raises:
        RemoteProtocolError: a negative request id, unknown flags, a negative limit, or a
            part that is not bytes. The peer broke the protocol: the connection ends.
    """
    if msg.req_id < 0:
        raise RemoteProtocolError(f"ChannelMsg: negative request id {msg.req_id}")
    if msg.flags & ~_KNOWN_FLAGS or msg.flags < 0:
        raise RemoteProtocolError(f"ChannelMsg: unknown flags {msg.flags:#x}")
    if msg.limit < 0:
        raise RemoteProtocolError(f"ChannelMsg: negative size limit {msg.limit}")
    for part in msg.parts:
        if type(part) is not bytes:
            raise RemoteProtocolError(f"ChannelMsg: a part is {type(part).__name__}, not bytes")


_MSG = int(Kind.CHANNEL_MSG)
_REPLY = int(Kind.CHANNEL_REPLY)


def read_request(value: Any) -> tuple[int, int, int, list[bytes]]:
    """Validate one decoded frame on the responder's side, as `check_request` does.

    Requests are nearly every frame a responder reads, so a well-formed one is checked
    inline and never becomes a `ChannelMsg`; anything else goes through `parse_message` and
    `check_request`, which name what is wrong.

    Returns:
        The request's ``(req_id, flags, limit, parts)``; ``req_id`` 0 is a one-way message.

    Raises:
        RemoteProtocolError: not a valid `ChannelMsg` (another message is not allowed on
            the responder's side of a channel connection).
    """
    if type(value) is list and len(value) == 6 and value[0] == _MSG:
        _, generation, req_id, flags, limit, parts = value
        if (
            type(generation) is int
            and generation >= 0
            and type(req_id) is int
            and req_id >= 0
            and type(flags) is int
            and flags >= 0
            and not flags & ~_KNOWN_FLAGS
            and type(limit) is int
            and limit >= 0
            and type(parts) is list
        ):
            for part in parts:
                if type(part) is not bytes:
                    break
            else:
                return req_id, flags, limit, parts
    msg = parse_message(value)
    if not isinstance(msg, ChannelMsg):
        raise RemoteProtocolError(f"unexpected {type(msg).__name__} on a channel connection")
    check_request(msg)  # raises: the inline checks above are the same
    return msg.req_id, msg.flags, msg.limit, msg.parts


def decide_channel_hello(
    hello: ChannelHello, *, node: str, cluster: str, generation: int
) -> ChannelHello | ChannelFail:
    """The responder's answer to a connecting node's `ChannelHello`.

    Returns:
        Our own `ChannelHello` to accept, or a `ChannelFail` with request id 0 to refuse
        (another protocol version, another cluster, or no name); the responder closes the
        connection after a refusal.
    """
    if hello.version != PROTOCOL_VERSION:
        return ChannelFail(
            generation,
            0,
            int(ChannelFailCode.REFUSED),
            f"node {hello.node!r} speaks protocol version {hello.version}, "
            f"node {node!r} speaks version {PROTOCOL_VERSION}",
        )
    if hello.cluster != cluster:
        return ChannelFail(
            generation,
            0,
            int(ChannelFailCode.REFUSED),
            f"node {hello.node!r} is in cluster {hello.cluster!r}, not {cluster!r}",
        )
    if not hello.node:
        return ChannelFail(
            generation, 0, int(ChannelFailCode.REFUSED), "the connecting node has no name"
        )
    return ChannelHello(generation, node, cluster, PROTOCOL_VERSION)


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opened:
    """The peer accepted the connection."""

    peer: str  #: the peer's node name


@dataclass(frozen=True, slots=True)
class Refused:
    """The peer refused the connection; the machine is closed."""

    detail: str


@dataclass(frozen=True, slots=True)
class Answered:
    """Request `req_id` got its answer: bytes, or a list of bytes if it accepted several."""

    req_id: int
    value: bytes | list[bytes]


@dataclass(frozen=True, slots=True)
class Failed:
    """Request `req_id` failed; `error` is what its caller raises."""

    req_id: int
    error: ChannelError


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Request `req_id` expired; an answer arriving later becomes a `LateAnswer`."""

    req_id: int
    error: ChannelTimeoutError


@dataclass(frozen=True, slots=True)
class LateAnswer:
    """An answer came for a request that is no longer waiting (expired or abandoned)."""

    req_id: int


ChannelEvent: TypeAlias = Opened | Refused | Answered | Failed | TimedOut | LateAnswer


@dataclass(slots=True)
class _Pending:
    deadline: float
    timeout: float
    flags: int
    limit: int


class ChannelMachine:
    """The requester's side of one channel connection.

    Feed it every message the peer sends (`receive`) and the time when a deadline passes
    (`tick`); send what `hello`, `message` and `request` return. Replies are matched to
    requests by id, so any number of requests may be outstanding at once.

    Args:
        node: our node name, sent in the hello.
        cluster: our cluster name; the peer refuses another.
        target: the peer's address (or name), used in error messages and attributes.
        generation: our generation, carried in every frame.
    """

    def __init__(self, *, node: str, cluster: str, target: str, generation: int = 0) -> None:
        self.node = node
        self.cluster = cluster
        self.target = target
        self.generation = generation
        #: The peer's node name, once it accepted the connection.
        self.peer: str | None = None
        self.state = ChannelState.CONNECTING
        #: Why the machine closed, once it did.
        self.close_detail = ""
        self._next_id = 1
        self._pending: dict[int, _Pending] = {}

    # -- introspection --------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """How many requests are waiting for their answer."""
        return len(self._pending)

    @property
    def next_deadline(self) -> float:
        """The earliest deadline of a waiting request (``inf`` when none waits)."""
        return min((p.deadline for p in self._pending.values()), default=math.inf)

    def _describe(self) -> str:
        if self.peer is not None and self.peer != self.target:
            return f"node {self.peer!r} at {self.target}"
        return self.target

    # -- what to send ----------------------------------------------------------------------
    def hello(self) -> ChannelHello:
        """The first frame to send on the new connection."""
        return ChannelHello(self.generation, self.node, self.cluster, PROTOCOL_VERSION)

    def message(self, parts: list[bytes]) -> ChannelMsg:
        """A one-way message (request id 0: no answer comes back)."""
        self._check_usable()
        return ChannelMsg(self.generation, 0, 0, 0, parts)

    def request(
        self,
        parts: list[bytes],
        *,
        now: float,
        timeout: float,
        multiple: bool = False,
        limit: int | None = None,
    ) -> ChannelMsg:
        """Start a request; its id is ``result.req_id``.

        Args:
            parts: the request's parts (see `to_parts`).
            now: the current time.
            timeout: seconds to wait for the answer (positive, see `check_timeout`).
            multiple: whether a multi-part answer is accepted.
            limit: the largest answer accepted, in bytes (None: any size).

        Raises:
            LocalProtocolError: the connection is closed.
            InvalidArgumentError: `timeout` is not positive.
        """
        req_id, flags, size_limit = self._register(now, timeout, multiple, limit)
        return ChannelMsg(self.generation, req_id, flags, size_limit, parts)

    def request_frame(
        self,
        parts: list[bytes],
        now: float,
        timeout: float,
        multiple: bool = False,
        limit: int | None = None,
    ) -> tuple[int, bytes]:
        """`request`, returning the request id and the encoded frame to send.

        The runtime's path, once per request: it sends the frame and never needs the
        `ChannelMsg` itself, so none is made.
        """
        req_id, flags, size_limit = self._register(now, timeout, multiple, limit)
        return req_id, encode_channel_msg(self.generation, req_id, flags, size_limit, parts)

    def _register(
        self, now: float, timeout: float, multiple: bool, limit: int | None
    ) -> tuple[int, int, int]:
        """Check and record a new request: its id, flags and size limit (0 when none)."""
        if self.state is ChannelState.CLOSED:
            self._check_usable()  # raises
        if not timeout > 0:
            raise InvalidArgumentError(f"a request timeout must be positive, got {timeout!r}")
        flags = _MULTIPLE if multiple else 0
        if limit is None:
            limit = 0
        else:
            flags |= _LIMIT
        req_id = self._next_id
        self._next_id = req_id + 1
        self._pending[req_id] = _Pending(now + timeout, timeout, flags, limit)
        return req_id, flags, limit

    def _check_usable(self) -> None:
        if self.state is ChannelState.CLOSED:
            raise LocalProtocolError(
                f"the channel connection to {self._describe()} is closed ({self.close_detail})"
            )

    # -- what comes back -------------------------------------------------------------------
    def receive_value(self, value: Any) -> list[ChannelEvent]:
        """`receive` a decoded frame, which this parses first (see also `take_answer`).

        Raises:
            RemoteProtocolError: the value is not a valid message, or not one the channel
                protocol allows here.
        """
        return self.receive(parse_message(value))

    def take_answer(self, value: Any) -> tuple[int, bytes | list[bytes]] | None:
        """The common case of `receive_value`, without building a message or events.

        Answers are nearly every frame a requester reads; checking a plain one inline costs
        a fraction of the general path.

        Args:
            value: a decoded frame.

        Returns:
            ``(req_id, answer)`` when `value` is a well-formed answer that its waiting
            request accepts as it is (no size limit to check): the request is now answered.
            Otherwise None, and nothing changed: the caller passes `value` to
            `receive_value`, which handles every case.
        """
        if type(value) is list and len(value) == 4 and value[0] == _REPLY:
            _, generation, req_id, parts = value
            if (
                type(generation) is int
                and generation >= 0
                and type(req_id) is int
                and type(parts) is list
                and self.state is ChannelState.OPEN
            ):
                pending = self._pending.get(req_id)
                if pending is None:
                    return None
                for part in parts:
                    if type(part) is not bytes:
                        return None
                flags = pending.flags
                if flags == _MULTIPLE:
                    answer: bytes | list[bytes] = parts
                elif flags == 0 and len(parts) <= 1:
                    answer = parts[0] if parts else b""
                else:
                    return None
                del self._pending[req_id]
                return req_id, answer
        return None

    def receive(self, msg: Message) -> list[ChannelEvent]:
        """Take one message from the peer.

        Raises:
            RemoteProtocolError: the peer sent something the channel protocol does not allow
                here; the caller closes the connection (`connection_lost`).
        """
        if self.state is ChannelState.CLOSED:
            return []
        if isinstance(msg, ChannelFail) and msg.req_id == 0:
            detail = f"{self._describe()} refused the channel connection: {msg.detail}"
            return [Refused(detail), *self.connection_lost(detail)]
        if self.state is ChannelState.CONNECTING:
            if not isinstance(msg, ChannelHello):
                raise RemoteProtocolError(
                    f"expected a ChannelHello from {self.target}, got {type(msg).__name__}"
                )
            if msg.version != PROTOCOL_VERSION:
                detail = (
                    f"{self.target} speaks protocol version {msg.version}, "
                    f"this node speaks version {PROTOCOL_VERSION}"
                )
                return [Refused(detail), *self.connection_lost(detail)]
            if msg.cluster != self.cluster:
                detail = f"{self.target} is in cluster {msg.cluster!r}, not {self.cluster!r}"
                return [Refused(detail), *self.connection_lost(detail)]
            self.peer = msg.node
            self.state = ChannelState.OPEN
            return [Opened(msg.node)]
        if isinstance(msg, ChannelReply):
            return [self._on_reply(msg.req_id, msg.parts)]
        if isinstance(msg, ChannelFail):
            return [self._on_fail(msg)]
        raise RemoteProtocolError(
            f"unexpected {type(msg).__name__} on a channel connection from {self.target}"
        )

    def _on_reply(self, req_id: int, parts: list[bytes]) -> ChannelEvent:
        for part in parts:
            if type(part) is not bytes:
                raise RemoteProtocolError(
                    f"ChannelReply: a part is {type(part).__name__}, not bytes"
                )
        pending = self._pending.pop(req_id, None)
        if pending is None:
            return LateAnswer(req_id)
        flags = pending.flags
        if flags & _MULTIPLE:
            if not flags & _LIMIT:
                return Answered(req_id, parts)  # the common cases first, in few steps
        elif len(parts) <= 1 and not flags & _LIMIT:
            return Answered(req_id, parts[0] if parts else b"")
        size = answer_size(parts)
        # The responder checks this before sending; a peer that does not is still held to it.
        if len(parts) > 1 and not pending.flags & _MULTIPLE:
            return Failed(
                req_id,
                BufferSmallError(
                    f"{self._describe()} answered with {len(parts)} parts; pass multiple=True "
                    "to accept a multi-part answer",
                    target=self.target,
                    parts=len(parts),
                    size=size,
                ),
            )
        if pending.flags & _LIMIT and size > pending.limit:
            return Failed(
                req_id,
                BufferSmallError(
                    f"the answer from {self._describe()} holds {size} bytes, more than "
                    f"max_response_bytes={pending.limit}",
                    target=self.target,
                    parts=len(parts),
                    size=size,
                    limit=pending.limit,
                ),
            )
        if pending.flags & _MULTIPLE:
            return Answered(req_id, parts)
        return Answered(req_id, parts[0] if parts else b"")

    def _on_fail(self, msg: ChannelFail) -> ChannelEvent:
        pending = self._pending.pop(msg.req_id, None)
        if pending is None:
            return LateAnswer(msg.req_id)
        target = self.target
        error: ChannelError
        code = msg.code
        if code == ChannelFailCode.NO_SERVER:
            error = NoServerError(msg.detail, target=target)
        elif code == ChannelFailCode.BUFFER_SMALL:
            limit = pending.limit if pending.flags & _LIMIT else None
            error = BufferSmallError(msg.detail, target=target, limit=limit)
        elif code == ChannelFailCode.NO_RESPONSE:
            error = NoResponseError(msg.detail, target=target)
        elif code == ChannelFailCode.HANDLER_FAILED:
            exc_type, _, exc_message = msg.detail.partition(": ")
            error = RemoteHandlerError(exc_type, exc_message, target=target)
        else:  # a code from a newer peer: still an error, with its words
            error = ChannelError(
                f"{self._describe()} failed the request (code {code}): {msg.detail}",
                target=target,
            )
        return Failed(msg.req_id, error)

    def tick(self, now: float) -> list[TimedOut]:
        """Expire every request whose deadline is at or before `now`."""
        expired = [rid for rid, p in self._pending.items() if p.deadline <= now]
        events = []
        for req_id in expired:
            pending = self._pending.pop(req_id)
            events.append(
                TimedOut(
                    req_id,
                    ChannelTimeoutError(
                        f"no answer from {self._describe()} within {pending.timeout:g} s",
                        target=self.target,
                        timeout=pending.timeout,
                    ),
                )
            )
        return events

    def abandon(self, req_id: int) -> None:
        """Stop waiting for `req_id` (its caller was cancelled); a later answer is late."""
        self._pending.pop(req_id, None)

    def connection_lost(self, detail: str) -> list[Failed]:
        """The connection ended: fail every waiting request with `UnavailableError`."""
        if self.state is ChannelState.CLOSED:
            return []
        self.state = ChannelState.CLOSED
        self.close_detail = detail
        pending, self._pending = self._pending, {}
        return [
            Failed(
                req_id,
                UnavailableError(
                    f"no answer from {self._describe()}, the connection was lost: {detail}",
                    target=self.target,
                ),
            )
            for req_id in pending
        ]
