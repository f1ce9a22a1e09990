"""Mutual authentication of a link by a shared cluster secret (sans-I/O).

When nodes share a cluster secret, every connection (replication, message channels, cancel
points, the control service) starts with this exchange, before its first protocol frame::

    connecting side (client)                         accepting side (server)
    AUTH_HELLO     [30, 0, version, client_nonce]  ->
                                                   <- AUTH_CHALLENGE [31, 0, server_nonce]
    AUTH_PROOF     [32, 0, client_proof]           ->
                                                   <- AUTH_OK [33, 0, server_proof]
                                                      or AUTH_FAIL [34, 0, reason], then close

    client_proof = HMAC-SHA256(secret, "hakit-auth-1 client" + client_nonce + server_nonce)
    server_proof = HMAC-SHA256(secret, "hakit-auth-1 server" + client_nonce + server_nonce)

Why it is built this way:

* Both sides draw a fresh random nonce for every connection and each proof covers both, so a
  recorded exchange proves nothing on a later connection: a replayed AUTH_PROOF meets
  another server nonce, a replayed AUTH_OK another client nonce.
* The two proofs carry different labels, so a server's proof can never be reflected back to
  it as a client's (nor the reverse).
* Until the client's proof checks out, the server sends nothing but a random nonce and the
  refusal: a peer without the secret learns no data and no metadata (no node name,
  generation or txid; the generation field of these frames is always 0). The client, too,
  sends its first protocol frame only once the server proved itself.
* Proofs are compared with `hmac.compare_digest` (constant time).

The machines only check frames and build replies; the caller moves the bytes and draws the
nonces (``secrets.token_bytes(NONCE_SIZE)``), so tests can drive them with fixed ones.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from ._channel import ChannelFailCode
from ._codec import encode_frame
from ._messages import Kind
from ._stop import StopReason

#: The version of this exchange; a peer with another one is refused.
AUTH_VERSION = 1
#: Bytes of every nonce.
NONCE_SIZE = 32
#: The shortest cluster secret accepted, in bytes.
MIN_SECRET_BYTES = 16

_CLIENT_LABEL = b"hakit-auth-1 client"
_SERVER_LABEL = b"hakit-auth-1 server"
_PROOF_SIZE = hashlib.sha256().digest_size


class AuthKind(enum.IntEnum):
    """Tags of the authentication frames (beside the protocol's `Kind` tags, never equal)."""

    AUTH_HELLO = 30
    AUTH_CHALLENGE = 31
    AUTH_PROOF = 32
    AUTH_OK = 33
    AUTH_FAIL = 34


assert not {int(k) for k in AuthKind} & {int(k) for k in Kind}, "auth tags overlap"

#: Why a peer is refused, in words an operator can act on.
NO_SECRET_HERE = (
    "the connecting node uses a cluster secret and the accepting node none: configure both alike"
)
SECRET_REQUIRED = (
    "the accepting node requires the cluster secret and the connecting node has none "
    "(--secret-file on the command line, secret= in open_node/open_cluster)"
)
WRONG_SECRET = "the cluster secrets differ (the connecting node's proof is wrong)"


def check_secret(secret: object) -> bytes:
    """Validate a cluster secret and return it as bytes.

    Args:
        secret: bytes, or a str (encoded as UTF-8); surrounding whitespace (a file's
            trailing newline) is not part of it.

    Raises:
        TypeError: `secret` is neither bytes nor str.
        ValueError: it is shorter than `MIN_SECRET_BYTES` bytes.
    """
    if isinstance(secret, str):
        secret = secret.encode()
    if not isinstance(secret, bytes | bytearray):
        raise TypeError(f"a cluster secret must be bytes or str, not {type(secret).__name__}")
    value = bytes(secret).strip()
    if len(value) < MIN_SECRET_BYTES:
        raise ValueError(
            f"a cluster secret needs at least {MIN_SECRET_BYTES} bytes, got {len(value)} "
            "(make one with: head -c 32 /dev/urandom | base64 > secret)"
        )
    return value


def _proof(secret: bytes, label: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    return hmac.new(secret, label + client_nonce + server_nonce, hashlib.sha256).digest()


def _check_nonce(nonce: bytes) -> None:
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        raise ValueError(f"a nonce must be {NONCE_SIZE} random bytes")


def is_auth_frame(value: Any) -> bool:
    """Whether a decoded frame is one of the authentication frames."""
    return (
        isinstance(value, list)
        and len(value) >= 2
        and isinstance(value[0], int)
        and not isinstance(value[0], bool)
        and value[0] in AuthKind._value2member_map_
    )


def _fail_frame(detail: str) -> bytes:
    return encode_frame([int(AuthKind.AUTH_FAIL), 0, detail])


def _bytes_field(value: Any, kind: AuthKind, size: int) -> bytes | None:
    """The one bytes field of a frame of `kind` (`size` long), or None if malformed."""
    if (
        isinstance(value, list)
        and len(value) == 3
        and value[0] == kind
        and value[1] == 0
        and isinstance(value[2], bytes)
        and len(value[2]) == size
    ):
        return value[2]
    return None


@dataclass(frozen=True, slots=True)
class AuthStep:
    """What to do after feeding one frame to an authentication machine.

    Attributes:
        send: a frame to send now (a challenge, a proof, or the refusal), if any.
        done: the peer is authenticated: the protocol may begin.
        failed: the link must close (after `send`, if any); the plain reason.
    """

    send: bytes | None = None
    done: bool = False
    failed: str | None = None


class AuthState(enum.Enum):
    """Where an authentication exchange stands."""

    STARTED = "started"  #: the first frame was sent (client) or is awaited (server)
    PROVING = "proving"  #: the client's proof was sent (client) or is awaited (server)
    DONE = "done"  #: both sides proved they know the secret
    FAILED = "failed"  #: refused; the link closes


class ClientAuth:
    """The connecting side of the exchange.

    Args:
        secret: the cluster secret (see `check_secret`).
        nonce: `NONCE_SIZE` fresh random bytes, never used before.
    """

    def __init__(self, secret: bytes, nonce: bytes) -> None:
        _check_nonce(nonce)
        self._secret = secret
        self._nonce = nonce
        self._server_nonce = b""
        self.state = AuthState.STARTED

    def hello(self) -> bytes:
        """The first frame to send."""
        return encode_frame([int(AuthKind.AUTH_HELLO), 0, AUTH_VERSION, self._nonce])

    def _fail(self, detail: str) -> AuthStep:
        self.state = AuthState.FAILED
        return AuthStep(failed=detail)

    def receive(self, value: Any) -> AuthStep:
        """Feed one decoded frame from the server."""
        if self.state is AuthState.DONE or self.state is AuthState.FAILED:
            return self._fail("unexpected frame after the authentication ended")
        if (
            isinstance(value, list)
            and len(value) == 3
            and value[0] == AuthKind.AUTH_FAIL
            and isinstance(value[2], str)
        ):
            return self._fail(value[2])
        if self.state is AuthState.STARTED:
            server_nonce = _bytes_field(value, AuthKind.AUTH_CHALLENGE, NONCE_SIZE)
            if server_nonce is None:
                return self._fail(_unexpected(value, "an authentication challenge"))
            self._server_nonce = server_nonce
            self.state = AuthState.PROVING
            mine = _proof(self._secret, _CLIENT_LABEL, self._nonce, server_nonce)
            return AuthStep(send=encode_frame([int(AuthKind.AUTH_PROOF), 0, mine]))
        theirs = _bytes_field(value, AuthKind.AUTH_OK, _PROOF_SIZE)
        if theirs is None:
            return self._fail(_unexpected(value, "the proof of the cluster secret"))
        expected = _proof(self._secret, _SERVER_LABEL, self._nonce, self._server_nonce)
        if not hmac.compare_digest(theirs, expected):
            return self._fail("the accepting node failed to prove it knows the cluster secret")
        self.state = AuthState.DONE
        return AuthStep(done=True)


class ServerAuth:
    """The accepting side of the exchange.

    Args:
        secret: the cluster secret (see `check_secret`).
        nonce: `NONCE_SIZE` fresh random bytes, never used before.
    """

    def __init__(self, secret: bytes, nonce: bytes) -> None:
        _check_nonce(nonce)
        self._secret = secret
        self._nonce = nonce
        self._client_nonce = b""
        self.state = AuthState.STARTED

    def _refuse(self, detail: str, reply: bytes | None = None) -> AuthStep:
        self.state = AuthState.FAILED
        return AuthStep(send=reply if reply is not None else _fail_frame(detail), failed=detail)

    def receive(self, value: Any) -> AuthStep:
        """Feed one decoded frame from the client."""
        if self.state is AuthState.DONE or self.state is AuthState.FAILED:
            return self._refuse("unexpected frame after the authentication ended")
        if self.state is AuthState.STARTED:
            if not is_auth_frame(value):
                # A peer without the secret opened with a protocol frame: refuse it in the
                # protocol it speaks, so its attach or request fails with a plain reason.
                return self._refuse(SECRET_REQUIRED, refusal_in_kind(value, SECRET_REQUIRED))
            if (
                len(value) != 4
                or value[0] != AuthKind.AUTH_HELLO
                or value[1] != 0
                or type(value[2]) is not int
            ):
                return self._refuse("malformed authentication hello")
            if value[2] != AUTH_VERSION:
                return self._refuse(
                    f"the peer authenticates with version {value[2]!r}, this node with "
                    f"{AUTH_VERSION}"
                )
            if not isinstance(value[3], bytes) or len(value[3]) != NONCE_SIZE:
                return self._refuse("malformed authentication hello")
            self._client_nonce = value[3]
            self.state = AuthState.PROVING
            return AuthStep(send=encode_frame([int(AuthKind.AUTH_CHALLENGE), 0, self._nonce]))
        proof = _bytes_field(value, AuthKind.AUTH_PROOF, _PROOF_SIZE)
        if proof is None:
            return self._refuse(WRONG_SECRET)
        expected = _proof(self._secret, _CLIENT_LABEL, self._client_nonce, self._nonce)
        if not hmac.compare_digest(proof, expected):
            return self._refuse(WRONG_SECRET)
        self.state = AuthState.DONE
        mine = _proof(self._secret, _SERVER_LABEL, self._client_nonce, self._nonce)
        return AuthStep(send=encode_frame([int(AuthKind.AUTH_OK), 0, mine]), done=True)


def refuse_auth_hello() -> bytes:
    """The refusal a node without a secret sends a peer that opened with AUTH_HELLO."""
    return _fail_frame(NO_SECRET_HERE)


def refusal_in_kind(value: Any, detail: str) -> bytes:
    """A refusal a peer that skipped authentication understands, for its first frame.

    A replica's hello gets a REJECT with `HANDSHAKE_FAILED`, a channel hello a CHANNEL_FAIL
    of request 0, a cancel request a REJECT; anything else the generic AUTH_FAIL. Every one
    carries generation 0: nothing about the node.
    """
    kind = value[0] if isinstance(value, list) and value else None
    if kind == Kind.HELLO or kind == Kind.CANCEL:
        return encode_frame([int(Kind.REJECT), 0, int(StopReason.HANDSHAKE_FAILED), detail])
    if kind == Kind.CHANNEL_HELLO:
        return encode_frame([int(Kind.CHANNEL_FAIL), 0, 0, int(ChannelFailCode.REFUSED), detail])
    return _fail_frame(detail)


def _unexpected(value: Any, wanted: str) -> str:
    if isinstance(value, list) and value and isinstance(value[0], int):
        try:
            what = Kind(value[0]).name
        except ValueError:
            what = f"a frame of kind {value[0]}"
        if what == "REJECT" and len(value) >= 4 and isinstance(value[3], str):
            return f"the peer refused: {value[3]}"
        if what == "CHANNEL_FAIL" and len(value) >= 5 and isinstance(value[4], str):
            return f"the peer refused: {value[4]}"
        return f"expected {wanted}, got {what}: does the peer use a cluster secret?"
    return f"expected {wanted}, got something else"
