"""The challenge-response exchange of a cluster secret, without any I/O."""

from __future__ import annotations

from typing import Any

import pytest

from hakit.protocol import FrameDecoder, Kind, StopReason
from hakit.protocol import _auth as auth

SECRET = b"correct horse battery staple"
OTHER = b"incorrect horse battery staple"


def nonce(tag: int) -> bytes:
    return bytes([tag]) * auth.NONCE_SIZE


def decode(frame: bytes | None) -> Any:
    assert frame is not None
    decoder = FrameDecoder()
    decoder.feed(frame)
    (value,) = decoder.drain()
    return value


def run(
    client: auth.ClientAuth, server: auth.ServerAuth
) -> tuple[auth.AuthStep, auth.AuthStep | None, list[Any]]:
    """Drive both sides to the end; return the server's last step, the client's, and the
    frames the client received."""
    seen: list[Any] = []
    challenge = server.receive(decode(client.hello()))
    assert challenge.failed is None
    seen.append(decode(challenge.send))
    proof = client.receive(seen[-1])
    assert proof.failed is None
    verdict = server.receive(decode(proof.send))
    if verdict.send is not None:
        seen.append(decode(verdict.send))
    if verdict.failed is not None:
        return verdict, None, seen
    return verdict, client.receive(seen[-1]), seen


def test_both_sides_prove_the_secret() -> None:
    client, server = auth.ClientAuth(SECRET, nonce(1)), auth.ServerAuth(SECRET, nonce(2))
    verdict, last, _ = run(client, server)
    assert verdict.done and last is not None and last.done
    assert client.state is server.state is auth.AuthState.DONE


def test_a_client_with_another_secret_gets_only_a_nonce_and_the_refusal() -> None:
    client, server = auth.ClientAuth(OTHER, nonce(1)), auth.ServerAuth(SECRET, nonce(2))
    verdict, last, seen = run(client, server)
    assert verdict.failed == auth.WRONG_SECRET and last is None
    assert server.state is auth.AuthState.FAILED
    assert seen == [
        [auth.AuthKind.AUTH_CHALLENGE, 0, nonce(2)],
        [auth.AuthKind.AUTH_FAIL, 0, auth.WRONG_SECRET],
    ]
    assert client.receive(seen[-1]).failed == auth.WRONG_SECRET


def test_a_server_with_another_secret_is_caught_by_the_client() -> None:
    client, server = auth.ClientAuth(SECRET, nonce(1)), auth.ServerAuth(SECRET, nonce(2))
    impostor = auth.ServerAuth(OTHER, nonce(2))
    impostor.receive(decode(client.hello()))
    proof = client.receive([auth.AuthKind.AUTH_CHALLENGE, 0, nonce(2)])
    # The impostor cannot check the proof; it answers with its own (wrong) server proof.
    forged = auth.ServerAuth(OTHER, nonce(2))
    forged.receive(decode(auth.ClientAuth(OTHER, nonce(1)).hello()))
    fake_ok = forged.receive(decode(auth.ClientAuth(OTHER, nonce(1)).receive(
        [auth.AuthKind.AUTH_CHALLENGE, 0, nonce(2)]).send))  # fmt: skip
    assert proof.send is not None and fake_ok.done
    step = client.receive(decode(fake_ok.send))
    assert step.failed is not None and "failed to prove" in step.failed
    assert server.state is auth.AuthState.STARTED  # untouched


def test_a_recorded_client_proof_is_refused_on_a_new_connection() -> None:
    client, server = auth.ClientAuth(SECRET, nonce(1)), auth.ServerAuth(SECRET, nonce(2))
    hello = decode(client.hello())
    server.receive(hello)
    proof = decode(client.receive([auth.AuthKind.AUTH_CHALLENGE, 0, nonce(2)]).send)
    assert server.receive(proof).done
    # The attacker replays hello and proof; the next connection's server draws a new nonce.
    fresh = auth.ServerAuth(SECRET, nonce(3))
    fresh.receive(hello)
    step = fresh.receive(proof)
    assert step.failed == auth.WRONG_SECRET and not step.done


def test_a_recorded_server_proof_is_refused_by_a_new_client() -> None:
    client, server = auth.ClientAuth(SECRET, nonce(1)), auth.ServerAuth(SECRET, nonce(2))
    verdict, _, seen = run(client, server)
    assert verdict.done
    # A fake server replays the recorded challenge and OK to the next client (new nonce).
    victim = auth.ClientAuth(SECRET, nonce(4))
    victim.hello()
    assert victim.receive(seen[0]).send is not None
    step = victim.receive(seen[1])
    assert step.failed is not None and not step.done


def test_a_server_proof_reflected_as_a_client_proof_is_refused() -> None:
    client, server = auth.ClientAuth(SECRET, nonce(1)), auth.ServerAuth(SECRET, nonce(2))
    server.receive(decode(client.hello()))
    # Same nonces on both sides: only the label tells a server proof from a client proof.
    other = auth.ServerAuth(SECRET, nonce(2))
    other.receive(decode(auth.ClientAuth(SECRET, nonce(1)).hello()))
    genuine = decode(client.receive([auth.AuthKind.AUTH_CHALLENGE, 0, nonce(2)]).send)
    server_proof = decode(other.receive(genuine).send)[2]
    step = server.receive([auth.AuthKind.AUTH_PROOF, 0, server_proof])
    assert step.failed == auth.WRONG_SECRET


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        ([Kind.HELLO, 3, 1, "hakit", "x", 5, 3, 0, None], [Kind.REJECT, 0]),
        ([Kind.CANCEL, 0, ""], [Kind.REJECT, 0]),
        ([Kind.CHANNEL_HELLO, 2, "x", "hakit", 1], [Kind.CHANNEL_FAIL, 0, 0]),
        (["junk"], [auth.AuthKind.AUTH_FAIL, 0]),
    ],
)
def test_a_peer_without_the_secret_is_refused_in_its_own_protocol(
    first: list[Any], expected: list[Any]
) -> None:
    server = auth.ServerAuth(SECRET, nonce(2))
    step = server.receive(first)
    assert step.failed == auth.SECRET_REQUIRED and not step.done
    refusal = decode(step.send)
    assert refusal[: len(expected)] == expected  # generation 0: nothing about the node
    assert auth.SECRET_REQUIRED in refusal
    if refusal[0] == Kind.REJECT:
        assert refusal[2] == StopReason.HANDSHAKE_FAILED


@pytest.mark.parametrize(
    "hello",
    [
        [auth.AuthKind.AUTH_HELLO, 0, 1, b"short"],
        [auth.AuthKind.AUTH_HELLO, 0, 1],
        [auth.AuthKind.AUTH_HELLO, 7, 1, nonce(1)],
        [auth.AuthKind.AUTH_PROOF, 0, b"x" * 32],
    ],
)
def test_a_malformed_hello_is_refused(hello: list[Any]) -> None:
    step = auth.ServerAuth(SECRET, nonce(2)).receive(hello)
    assert step.failed is not None and step.send is not None


def test_another_auth_version_is_named() -> None:
    step = auth.ServerAuth(SECRET, nonce(2)).receive([auth.AuthKind.AUTH_HELLO, 0, 9, nonce(1)])
    assert step.failed is not None and "version 9" in step.failed


def test_a_client_that_meets_a_plain_protocol_reply_says_so() -> None:
    client = auth.ClientAuth(SECRET, nonce(1))
    client.hello()
    step = client.receive([Kind.REJECT, 0, 2, "no such thing"])
    assert step.failed == "the peer refused: no such thing"


def test_secrets_are_checked() -> None:
    assert auth.check_secret(" a-long-enough-secret\n") == b"a-long-enough-secret"
    with pytest.raises(ValueError, match="at least 16 bytes"):
        auth.check_secret("short")
    with pytest.raises(TypeError):
        auth.check_secret(42)
    with pytest.raises(ValueError, match="nonce"):
        auth.ClientAuth(SECRET, b"0")
