"""Connection strings: every accepted form, canonical strings, and malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hakit.transports import (
    Address,
    MemoryAddress,
    TcpAddress,
    UnixAddress,
    parse_address,
)

ACCEPTED = [
    ("127.0.0.1:5000", TcpAddress("127.0.0.1", 5000), "127.0.0.1:5000"),
    ("0.0.0.0:0", TcpAddress("0.0.0.0", 0), "0.0.0.0:0"),
    ("10.1.2.3:65535", TcpAddress("10.1.2.3", 65535), "10.1.2.3:65535"),
    ("localhost:80", TcpAddress("localhost", 80), "localhost:80"),
    ("db-1.example.com:7000", TcpAddress("db-1.example.com", 7000), "db-1.example.com:7000"),
    ("example.com.:7000", TcpAddress("example.com.", 7000), "example.com.:7000"),
    ("node_a:1", TcpAddress("node_a", 1), "node_a:1"),
    ("host:05000", TcpAddress("host", 5000), "host:5000"),
    ("[::1]:5000", TcpAddress("::1", 5000), "[::1]:5000"),
    ("[::]:0", TcpAddress("::", 0), "[::]:0"),
    ("[2001:db8::7]:443", TcpAddress("2001:db8::7", 443), "[2001:db8::7]:443"),
    ("[fe80::1%eth0]:9", TcpAddress("fe80::1%eth0", 9), "[fe80::1%eth0]:9"),
    ("/tmp/x", UnixAddress("/tmp/x"), "/tmp/x"),
    ("/run/hakit/node a.sock", UnixAddress("/run/hakit/node a.sock"), "/run/hakit/node a.sock"),
    ("unix:/tmp/x", UnixAddress("/tmp/x"), "/tmp/x"),
    ("unix:relative/x.sock", UnixAddress("relative/x.sock"), "unix:relative/x.sock"),
    ("unix:x", UnixAddress("x"), "unix:x"),
    ("mem:a", MemoryAddress("a"), "mem:a"),
    ("mem:node-1", MemoryAddress("node-1"), "mem:node-1"),
    ("mem:with:colon", MemoryAddress("with:colon"), "mem:with:colon"),
]


@pytest.mark.parametrize(("text", "expected", "canonical"), ACCEPTED)
def test_accepted_forms(text: str, expected: Address, canonical: str) -> None:
    address = parse_address(text)
    assert address == expected
    assert type(address) is type(expected)
    assert str(address) == canonical
    # The canonical string is itself accepted and means the same address.
    assert parse_address(canonical) == address


MALFORMED = [
    "",
    " ",
    "foo",
    "relative/path",
    "./x.sock",
    "127.0.0.1",
    "127.0.0.1:",
    ":5000",
    "host:port",
    "host:-1",
    "host:+1",
    "host:65536",
    "host:99999",
    "host:123456",
    "host:1.5",
    "host:1 ",
    " host:1",
    "host :1",
    "ho st:1",
    "host\n:1",
    "999.1.1.1:5000",
    "1.2.3:5000",
    "1.2.3.4.5:5000",
    "-host:1",
    "host-:1",
    "a..b:1",
    "exa$mple.com:1",
    "::1:5000",
    "[::1]",
    "[::1]5000",
    "[::1:5000",
    "[nothex::1]:5000",
    "[127.0.0.1]:5000",
    "[]:5000",
    "[::1]:",
    "[::1]:x",
    "mem:",
    "unix:",
    "unix:/tmp/dir/",
    "/",
    "/tmp/dir/",
    "tcp://127.0.0.1:5000",
    'quo"te:1',
]


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_strings_name_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="bad address") as info:
        parse_address(text)
    message = str(info.value)
    assert repr(text) in message or f'"{text}"' in message
    for form in ('"host:port"', '"[v6]:port"', '"/path"', '"unix:/path"', '"mem:name"'):
        assert form in message


def test_message_example() -> None:
    with pytest.raises(ValueError, match="bad address") as info:
        parse_address("foo")
    assert str(info.value).startswith('bad address "foo"')
    assert str(info.value).endswith(
        'expected "host:port", "[v6]:port", "/path" or "unix:/path", or "mem:name"'
    )


def test_port_error_says_why() -> None:
    with pytest.raises(ValueError, match=r"port 70000 is out of range 0\.\.65535"):
        parse_address("h:70000")
    with pytest.raises(ValueError, match="IPv6 address needs brackets"):
        parse_address("::1:80")


def test_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_address(5000)  # type: ignore[arg-type]


def test_dataclasses_validate_and_are_frozen() -> None:
    with pytest.raises(ValueError, match="port"):
        TcpAddress("h", 70000)
    with pytest.raises(ValueError, match="port"):
        TcpAddress("h", -1)
    with pytest.raises(ValueError, match="host"):
        TcpAddress("", 1)
    with pytest.raises(ValueError, match="path"):
        UnixAddress("")
    with pytest.raises(ValueError, match="name"):
        MemoryAddress("")
    address = TcpAddress("h", 1)
    with pytest.raises(AttributeError):
        address.port = 2  # type: ignore[misc]
    assert {TcpAddress("h", 1), TcpAddress("h", 1), MemoryAddress("h")} == {
        TcpAddress("h", 1),
        MemoryAddress("h"),
    }


@given(
    st.one_of(
        st.builds(
            TcpAddress,
            st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9](\.[a-z0-9]{1,10}){0,3}", fullmatch=True),
            st.integers(0, 65535),
        ),
        st.builds(TcpAddress, st.ip_addresses().map(str), st.integers(0, 65535)),
        st.builds(
            UnixAddress,
            st.from_regex(r"/[A-Za-z0-9_.-]{1,30}(/[A-Za-z0-9_.-]{1,30})*", fullmatch=True),
        ),
        st.builds(MemoryAddress, st.from_regex(r"[A-Za-z0-9_.:-]{1,30}", fullmatch=True)),
    )
)
def test_canonical_string_round_trips(address: Address) -> None:
    assert parse_address(str(address)) == address


@given(st.text(max_size=40))
def test_arbitrary_text_parses_or_raises_value_error(text: str) -> None:
    try:
        address = parse_address(text)
    except ValueError as exc:
        error = str(exc)
    else:
        assert parse_address(str(address)) == address
        return
    assert error.startswith("bad address")
