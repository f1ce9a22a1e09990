"""TLS on TCP links (127.0.0.1), with certificates from a throw-away CA (trustme)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trustme
from trio.testing import MockClock

import hakit
from hakit import MasterParams, StopReason, TlsConfig

from .conftest import commit

SECRET = b"a cluster secret for the tests"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def pki(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PEM files: the CA, and a certificate for 127.0.0.1 with its key."""
    root = tmp_path_factory.mktemp("pki")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"ca": root / "ca.pem", "cert": root / "node.pem", "key": root / "node.key"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return {name: str(path) for name, path in paths.items()}


async def served(
    nursery: trio.Nursery, tls: TlsConfig | None, secret: bytes | None = None
) -> hakit.Node:
    node = hakit.Node("m", tls=tls, secret=secret)
    await nursery.start(node._main)
    await node.listen("127.0.0.1:0")
    node.set_master_params(MasterParams())
    await commit(node, before=1)

    async def pong(msg: hakit.ChannelMessage) -> None:
        await msg.respond(b"pong")

    node.set_msg_dispatch(pong)
    return node


async def attach(
    nursery: trio.Nursery, master: hakit.Node, tls: TlsConfig | None, secret: bytes | None = None
) -> hakit.Node:
    replica = hakit.Node("r1", tls=tls, secret=secret)
    await nursery.start(replica._main)
    assert master.address is not None
    nursery.start_soon(replica.attach_master, master.address)
    await master.attach_replica(timeout=5)
    return replica


async def test_replication_and_channels_over_tls(
    io_clock: MockClock, nursery: trio.Nursery, pki: dict[str, str]
) -> None:
    master = await served(nursery, TlsConfig.from_files(cert=pki["cert"], key=pki["key"]), SECRET)
    replica = await attach(nursery, master, TlsConfig.from_files(ca=pki["ca"]), SECRET)
    assert (await commit(master, after=2)).acked == ("r1",)
    assert dict(replica.items()) == {"before": 1, "after": 2}
    assert master.address is not None
    assert await replica.channel(master.address).send_request(b"ping", timeout=5) == b"pong"
    assert master.events.of_type(hakit.ConnectionRefused) == []


async def test_an_unverified_certificate_is_refused(
    io_clock: MockClock, nursery: trio.Nursery, pki: dict[str, str]
) -> None:
    master = await served(nursery, TlsConfig.from_files(cert=pki["cert"], key=pki["key"]))
    assert master.address is not None
    # Default verification: the system's CAs do not know the test CA.
    stranger = hakit.Node("r1", tls=TlsConfig(client=ssl.create_default_context()))
    await nursery.start(stranger._main)
    with pytest.raises(hakit.HAIOError, match="CERTIFICATE_VERIFY_FAILED") as caught:
        await stranger.attach_master(master.address, timeout=5)
    assert caught.value.stop_reason is StopReason.CONNECTION_ABORTED
    with pytest.raises(hakit.UnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
        await stranger.channel(master.address).send_request(b"ping", timeout=5)
    # A plain TCP client gets nowhere either, and the master records why.
    plain = hakit.Node("plain")
    await nursery.start(plain._main)
    with pytest.raises(hakit.HAIOError):
        await plain.attach_master(master.address, timeout=5)
    assert len(master.events.of_type(hakit.ConnectionRefused)) >= 2
    assert master.role is hakit.Role.MASTER


async def test_a_certificate_for_another_host_is_refused(
    io_clock: MockClock, nursery: trio.Nursery, ca: trustme.CA, tmp_path: Path
) -> None:
    wrong = ca.issue_cert("db.example.org")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    wrong.cert_chain_pems[0].write_to_path(str(cert))
    wrong.private_key_pem.write_to_path(str(key))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    master = await served(nursery, TlsConfig.from_files(cert=str(cert), key=str(key)))
    replica = hakit.Node("r1", tls=TlsConfig.from_files(ca=str(ca_file)))
    await nursery.start(replica._main)
    assert master.address is not None
    with pytest.raises(hakit.HAIOError, match=r"IP address mismatch|doesn't match"):
        await replica.attach_master(master.address, timeout=5)


async def test_mutual_tls_requires_a_client_certificate(
    io_clock: MockClock, nursery: trio.Nursery, pki: dict[str, str]
) -> None:
    mutual = TlsConfig.from_files(cert=pki["cert"], key=pki["key"], ca=pki["ca"])
    assert mutual.server is not None and mutual.server.verify_mode is ssl.CERT_REQUIRED
    master = await served(nursery, mutual)
    assert master.address is not None
    # Trusting the server is not enough: without a certificate of its own it is refused.
    anonymous = hakit.Node("anonymous", tls=TlsConfig.from_files(ca=pki["ca"]))
    await nursery.start(anonymous._main)
    with pytest.raises(hakit.HakitError):
        # TLS 1.3 reports the missing certificate after the client's handshake: the attach
        # fails when the first frame exchange breaks.
        await anonymous.attach_master(master.address, timeout=5)
    replica = await attach(nursery, master, mutual)
    assert (await commit(master, after=2)).acked == ("r1",)
    assert replica.get("after") == 2


def test_tls_config_checks_its_arguments(pki: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="needs its certificate"):
        TlsConfig.from_files(key=pki["key"])
    with pytest.raises(TypeError, match=r"ssl\.SSLContext"):
        TlsConfig(server="context")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="client context"):
        TlsConfig(server=ssl.create_default_context())
    with pytest.raises(FileNotFoundError):
        TlsConfig.from_files(cert="/nonexistent/cert.pem")
