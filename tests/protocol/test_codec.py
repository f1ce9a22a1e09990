"""Length-prefixed msgpack frames: `encode_frame`, `FrameDecoder`, `array_header`."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hakit.protocol import FrameDecoder, RemoteProtocolError, StopReason, encode_frame
from hakit.protocol._codec import array_header, frame, pack

# msgpack values that survive a round trip unchanged (tuples come back as lists, so none;
# maps keyed by str/int/bytes, as the decoder allows non-str keys).
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text(max_size=5) | st.integers(-1000, 1000) | st.binary(max_size=5),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


def decode_in_pieces(data: bytes, cuts: list[int], **kwargs: Any) -> list[Any]:
    """Feed `data` to one decoder split at the sorted offsets `cuts`, draining after each."""
    decoder = FrameDecoder(**kwargs)
    out: list[Any] = []
    start = 0
    for cut in [*cuts, len(data)]:
        decoder.feed(data[start:cut])
        out += decoder.drain()
        start = cut
    assert decoder.buffered == 0
    return out


def test_frame_layout() -> None:
    data = encode_frame(["a", 1])
    payload = msgpack.packb(["a", 1])
    assert data == len(payload).to_bytes(4, "big") + payload
    assert frame(b"\xc0") == b"\x00\x00\x00\x01\xc0"


def test_bytes_and_str_stay_distinct() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame([b"k", "k", {b"b": 1, "s": 2, 3: 4}]))
    assert decoder.drain() == [[b"k", "k", {b"b": 1, "s": 2, 3: 4}]]


@pytest.mark.parametrize(
    "value",
    [None, 0, -1, 2**64 - 1, 1.5, "", "é", b"", b"\x00" * 70000, [], [[]], {"a": [1, b"x"]}],
)
def test_round_trip_one_frame(value: Any) -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(value))
    assert decoder.drain() == [value]
    assert decoder.drain() == []
    assert decoder.buffered == 0


def test_every_split_point_of_a_small_stream() -> None:
    messages: list[Any] = [[1, 0, "hello"], b"", {"k": [1, 2, 3]}, None, "x" * 40, 7]
    data = b"".join(encode_frame(v) for v in messages)
    for cut in range(len(data) + 1):
        assert decode_in_pieces(data, [cut]) == messages, cut
    for cut in range(len(data) + 1):  # and every pair of split points around each frame edge
        for second in range(cut, min(cut + 6, len(data)) + 1):
            assert decode_in_pieces(data, [cut, second]) == messages, (cut, second)


def test_byte_by_byte() -> None:
    messages: list[Any] = [[i, "v" * i] for i in range(20)]
    data = b"".join(encode_frame(v) for v in messages)
    assert decode_in_pieces(data, list(range(1, len(data)))) == messages


def test_partial_frame_is_kept() -> None:
    decoder = FrameDecoder()
    data = encode_frame("abcdef")
    decoder.feed(data[:-1])
    assert decoder.drain() == []
    assert decoder.buffered == len(data) - 1
    decoder.feed(data[-1:])
    assert decoder.drain() == ["abcdef"]


def test_feed_accepts_bytearray_and_memoryview() -> None:
    decoder = FrameDecoder()
    data = encode_frame([1, 2]) + encode_frame([3])
    decoder.feed(bytearray(data[:3]))
    decoder.feed(memoryview(data)[3:])
    assert decoder.drain() == [[1, 2], [3]]


@given(st.lists(values, max_size=8), st.data())
def test_random_streams_split_randomly(messages: list[Any], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(v) for v in messages)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12).map(sorted))
    assert decode_in_pieces(stream, cuts) == messages


@given(st.lists(values, min_size=1, max_size=4))
def test_random_streams_at_every_split_point(messages: list[Any]) -> None:
    stream = b"".join(encode_frame(v) for v in messages)
    for cut in range(len(stream) + 1):
        assert decode_in_pieces(stream, [cut]) == messages


# -- refusals ------------------------------------------------------------------------------


def test_oversized_frame_is_refused_from_its_prefix_alone() -> None:
    decoder = FrameDecoder(max_frame_size=10)
    decoder.feed((11).to_bytes(4, "big"))  # the body never arrives
    with pytest.raises(RemoteProtocolError, match="11 bytes exceeds the maximum of 10"):
        decoder.drain()


def test_frame_of_exactly_the_maximum_is_accepted() -> None:
    payload = pack("x" * 8)
    decoder = FrameDecoder(max_frame_size=len(payload))
    decoder.feed(frame(payload))
    assert decoder.drain() == ["x" * 8]


def test_default_maximum_is_refused_without_buffering() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\xff\xff\xff\xff" + b"\x00" * 100)
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        decoder.drain()
    assert decoder.buffered == 0


def test_max_frame_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        FrameDecoder(max_frame_size=0)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",  # a byte msgpack never uses
        b"\x92\x01",  # an array of two announcing more than the frame holds
        b"\x01\x02",  # two values in one frame
        b"",  # an empty frame holds no value
        b"\xd9\x02\xff\xfe",  # a str that is not UTF-8
    ],
)
def test_garbage_payload_is_a_remote_protocol_error(payload: bytes) -> None:
    decoder = FrameDecoder()
    decoder.feed(frame(payload))
    with pytest.raises(RemoteProtocolError, match="not valid msgpack"):
        decoder.drain()


def test_good_frames_before_a_bad_one_come_first() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame("one") + encode_frame("two") + frame(b"\xc1") + encode_frame("x"))
    assert decoder.drain() == ["one", "two"]
    with pytest.raises(RemoteProtocolError):
        decoder.drain()


def test_good_frames_before_an_oversized_one_come_first() -> None:
    decoder = FrameDecoder(max_frame_size=100)
    decoder.feed(encode_frame("one") + (101).to_bytes(4, "big"))
    assert decoder.drain() == ["one"]
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        decoder.drain()


def test_decoder_stays_broken() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame(b"\xc1"))
    with pytest.raises(RemoteProtocolError) as first:
        decoder.drain()
    decoder.feed(encode_frame("valid"))
    for _ in range(2):
        with pytest.raises(RemoteProtocolError) as again:
            decoder.drain()
        assert again.value is first.value


def test_remote_protocol_error_defaults_to_connection_aborted() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame(b"\xc1"))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.drain()
    assert info.value.stop_reason is StopReason.CONNECTION_ABORTED


# -- array_header --------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 65535, 65536, 70000])
def test_array_header_matches_msgpack(length: int) -> None:
    packed = msgpack.packb([None] * length)
    header = array_header(length)
    assert packed == header + b"\xc0" * length


def test_spliced_array_decodes() -> None:
    items = [pack(i) for i in range(20)]
    decoder = FrameDecoder()
    decoder.feed(frame(array_header(len(items)) + b"".join(items)))
    assert decoder.drain() == [list(range(20))]


def test_decode_limits_stop_a_frame_of_many_containers_early() -> None:
    from hakit.protocol import CHANNEL_LIMITS, HANDSHAKE_LIMITS, DecodeLimits

    # 16 MiB of empty arrays: a gigabyte of lists if decoded without limits.
    n = 16 * 1024 * 1024 - 5
    flat = frame(b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n)
    one = b"\xdc" + (4000).to_bytes(2, "big") + b"\x90" * 4000
    nested = frame(b"\xdc" + (4000).to_bytes(2, "big") + one * 4000)
    for limits, data, expected in [
        (CHANNEL_LIMITS, flat, "exceeds max_array_len"),
        (CHANNEL_LIMITS, nested, "more than 16 arrays and maps"),
        (HANDSHAKE_LIMITS, nested, "exceeds the maximum of 65536"),
        (DecodeLimits(max_map_len=1), encode_frame({1: 2, 3: 4}), "max_map_len"),
        (DecodeLimits(max_containers=2), encode_frame([{}, []]), "more than 2"),
    ]:
        decoder = FrameDecoder(limits=limits)
        decoder.feed(data)
        with pytest.raises(RemoteProtocolError, match=expected):
            decoder.drain()
    fine = FrameDecoder(limits=DecodeLimits(max_containers=3))
    fine.feed(encode_frame([{}, []]))
    assert fine.drain() == [[{}, []]]


def test_limits_can_be_raised_after_the_first_frame_but_not_past_the_maximum() -> None:
    from hakit.protocol import HANDSHAKE_LIMITS, DecodeLimits

    decoder = FrameDecoder(1000, limits=HANDSHAKE_LIMITS)
    assert decoder.max_frame_size == 1000  # the decoder's own maximum caps the limits
    decoder.set_limits(DecodeLimits(max_containers=1))
    decoder.feed(encode_frame([[1]]))
    with pytest.raises(RemoteProtocolError, match="more than 1"):
        decoder.drain()
    with pytest.raises(ValueError, match="max_containers"):
        DecodeLimits(max_containers=-1)


def test_a_hello_with_the_longest_history_fits_the_handshake_limits() -> None:
    from hakit.protocol import HANDSHAKE_LIMITS
    from hakit.protocol import _messages as m
    from hakit.protocol._history import MAX_HISTORY, MAX_HISTORY_ID

    history = [["h" * MAX_HISTORY_ID, n + 1] for n in range(MAX_HISTORY)]
    hello = m.Hello(9, m.PROTOCOL_VERSION, "hakit", "r" * 100, 10**9, 8, 0, "x" * 200, history)
    decoder = FrameDecoder(limits=HANDSHAKE_LIMITS)
    decoder.feed(hello.encode())
    assert m.parse_message(decoder.drain()[0]) == hello


# -- the fast paths against a reference decoder ---------------------------------------------

# One token of a stream: a good frame, a frame whose payload is not one msgpack value, or a
# length prefix past the maximum (the stream is lost from there on).
_MAX = 64
# Values made of containers only (a byte each): as many containers as the payload has bytes,
# right at the edge of a container budget.
containers = st.recursive(
    st.builds(list) | st.builds(dict), lambda children: st.lists(children, max_size=3)
)
tokens = st.one_of(
    (values | containers).map(lambda v: ("good", v)),
    st.sampled_from([b"\xc1", b"\x92\x01", b"\x01\x02", b""]).map(lambda p: ("bad", p)),
    st.just(("oversized", None)),
)


def _reference(stream: list[tuple[str, Any]], budget: int | None) -> tuple[bytes, list[Any], bool]:
    """The stream's bytes, the values a decoder must return, and whether it must then fail.

    Decodes frame by frame with msgpack alone, counting every container against `budget`
    (no shortcut), and stops at the first frame that breaks the stream.
    """
    data, out = b"", []
    for kind, item in stream:
        if kind == "oversized":
            return data + (_MAX + 1).to_bytes(4, "big") + b"\x00" * 3, out, True
        payload = pack(item) if kind == "good" else item
        if len(payload) > _MAX:
            continue  # a value too large for this stream's maximum: left out of it
        data += frame(payload)
        left = [budget]

        def count(container: Any, left: list[Any] = left) -> Any:
            if left[0] is not None:
                left[0] -= 1
                if left[0] < 0:
                    raise ValueError("over budget")
            return container

        try:
            value = msgpack.unpackb(
                payload, raw=False, strict_map_key=False, list_hook=count, object_hook=count
            )
        except Exception:
            return data, out, True
        out.append(value)
    return data, out, False


@given(
    st.lists(tokens, max_size=8),
    st.one_of(st.none(), st.integers(0, 12)),
    st.data(),
)
def test_pieces_of_any_buffer_type_decode_as_the_reference_does(
    stream: list[tuple[str, Any]], budget: int | None, data: st.DataObject
) -> None:
    # Bytes (kept without a copy while they hold whole frames), bytearrays and memoryviews
    # (copied: the caller may reuse its buffer, which is overwritten here after each feed),
    # fed at random cuts, with or without a drain in between: the same values in the same
    # order, then the stream's error, raised by the drain after the last good frame and by
    # every drain after it.
    from hakit.protocol import DecodeLimits

    raw, expected, fails = _reference(stream, budget)
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=10).map(sorted))
    decoder = FrameDecoder(_MAX, limits=DecodeLimits(_MAX, max_containers=budget))
    got: list[Any] = []
    error: RemoteProtocolError | None = None
    start = 0
    for cut in [*cuts, len(raw)]:
        piece = raw[start:cut]
        start = cut
        kind = data.draw(st.sampled_from(["bytes", "bytearray", "memoryview"]))
        if kind == "bytes":
            decoder.feed(piece)
        else:
            reused = bytearray(piece)
            decoder.feed(reused if kind == "bytearray" else memoryview(reused))
            reused[:] = b"\xc1" * len(reused)  # the caller's next read overwrites it
        if error is None and data.draw(st.booleans()):
            try:
                got += decoder.drain()
            except RemoteProtocolError as exc:
                error = exc
    if error is None:
        try:
            got += decoder.drain()
            if fails:
                decoder.drain()
        except RemoteProtocolError as exc:
            error = exc
    assert got == expected
    assert (error is not None) == fails
    if error is not None:
        with pytest.raises(RemoteProtocolError) as again:
            decoder.drain()
        assert again.value is error
    else:
        assert decoder.buffered == 0


@pytest.mark.parametrize("lead", [0, 1, 3])
@pytest.mark.parametrize("tail", [0, 1, 4, 6])
def test_a_bad_frame_alone_or_after_good_ones_with_a_partial_tail(lead: int, tail: int) -> None:
    # The single-frame path (the read is exactly one frame) and the loop break the same way;
    # a partial frame after a whole one is kept, whichever buffer type brought it.
    good = b"".join(encode_frame(i) for i in range(lead))
    rest = encode_frame("after")
    for bad in (frame(b"\xc1"), (_MAX + 1).to_bytes(4, "big")):
        decoder = FrameDecoder(_MAX)
        decoder.feed(good + bad + rest[:tail])
        if lead:
            assert decoder.drain() == list(range(lead))
        with pytest.raises(RemoteProtocolError):
            decoder.drain()
        assert decoder.buffered == 0
    for feed_type in (bytes, bytearray, memoryview):
        decoder = FrameDecoder(_MAX)
        decoder.feed(feed_type(good + rest[:tail]))  # type: ignore[operator]
        assert decoder.drain() == list(range(lead))
        assert decoder.buffered == (tail if tail < len(rest) else 0)
        decoder.feed(feed_type(rest[tail:]))  # type: ignore[operator]
        assert decoder.drain() == ["after"] and decoder.buffered == 0


@pytest.mark.parametrize("budget", [0, 1, 2, 7])
@pytest.mark.parametrize("after_a_frame", [False, True])
def test_a_payload_one_byte_longer_than_the_budget_is_counted(
    budget: int, after_a_frame: bool
) -> None:
    # A payload no longer than the budget is decoded without counting (it cannot hold more
    # containers than it has bytes); one byte more is counted: budget + 1 nested arrays,
    # one byte each, are refused, whether the frame comes alone or after another.
    from hakit.protocol import DecodeLimits

    def nested(depth: int) -> list[Any]:
        value: list[Any] = []
        for _ in range(depth - 1):
            value = [value]
        return value

    lead = encode_frame(1) if after_a_frame else b""
    for depth, fits in ((budget, True), (budget + 1, False)):
        payload = pack(nested(depth)) if depth else pack(None)
        assert len(payload) == max(depth, 1)
        decoder = FrameDecoder(limits=DecodeLimits(max_containers=budget))
        decoder.feed(lead + frame(payload))
        if fits:
            assert decoder.drain() == [1] * after_a_frame + [msgpack.unpackb(payload)]
            continue
        if after_a_frame:
            assert decoder.drain() == [1]
        with pytest.raises(RemoteProtocolError, match=f"more than {budget} arrays and maps"):
            decoder.drain()


@given(
    st.lists(tokens, max_size=8),
    st.one_of(st.none(), st.integers(0, 12)),
    st.data(),
)
def test_decode_is_feed_then_drain(
    stream: list[tuple[str, Any]], budget: int | None, data: st.DataObject
) -> None:
    # `decode` (one call per read; a read of exactly one frame after nothing skips the
    # buffer) against `feed` + `drain` on a twin decoder, pieces of every buffer type at
    # random cuts: the same values, the same error, and the same `buffered` and `broken`
    # (plain attributes, kept up to date) after every piece.
    from hakit.protocol import DecodeLimits

    raw, expected, fails = _reference(stream, budget)
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=10).map(sorted))
    if data.draw(st.booleans()):  # cut at frame boundaries too: one frame per read
        pos = 0
        while len(raw) - pos >= 4:
            pos += 4 + int.from_bytes(raw[pos : pos + 4], "big")
            cuts.append(min(pos, len(raw)))
        cuts.sort()
    limits = DecodeLimits(_MAX, max_containers=budget)
    fast, slow = FrameDecoder(_MAX, limits=limits), FrameDecoder(_MAX, limits=limits)
    results: dict[str, list[Any]] = {"fast": [], "slow": []}
    errors: dict[str, RemoteProtocolError | None] = {"fast": None, "slow": None}
    start = 0
    for cut in [*cuts, len(raw)]:
        piece = raw[start:cut]
        start = cut
        kind = data.draw(st.sampled_from(["bytes", "bytes", "bytearray", "memoryview"]))
        fed: bytes | bytearray | memoryview = piece
        if kind != "bytes":
            fed = bytearray(piece) if kind == "bytearray" else memoryview(bytearray(piece))
        for name, decoder in (("fast", fast), ("slow", slow)):
            if errors[name] is not None:
                continue
            try:
                if name == "fast":
                    results[name] += decoder.decode(fed)
                else:
                    decoder.feed(fed)
                    results[name] += decoder.drain()
            except RemoteProtocolError as exc:
                errors[name] = exc
        assert results["fast"] == results["slow"]
        assert (errors["fast"] is None) == (errors["slow"] is None)
        assert fast.buffered == slow.buffered == len(fast._buffer)
        assert (fast.broken is None) == (slow.broken is None)
    for name, decoder in (("fast", fast), ("slow", slow)):
        if errors[name] is None:
            try:
                results[name] += decoder.drain()
            except RemoteProtocolError as exc:
                errors[name] = exc
    assert results["fast"] == results["slow"] == expected
    assert (errors["fast"] is not None) == (errors["slow"] is not None) == fails
    if fails:
        assert fast.broken is errors["fast"]
        with pytest.raises(RemoteProtocolError) as again:
            fast.decode(b"")
        assert again.value is fast.broken


def test_decode_refuses_a_whole_frame_over_the_maximum_as_drain_does() -> None:
    # The one-frame path checks the announced size too, even with the whole payload there.
    for size, fits in ((_MAX, True), (_MAX + 1, False)):
        whole = frame(pack("x" * (size - 2)))  # a str 8: two bytes of header
        assert len(whole) - 4 == size
        fast, slow = FrameDecoder(_MAX), FrameDecoder(_MAX)
        if fits:
            assert fast.decode(whole) == ["x" * (size - 2)]
            slow.feed(whole)
            assert slow.drain() == ["x" * (size - 2)]
        else:
            with pytest.raises(RemoteProtocolError, match="exceeds"):
                fast.decode(whole)
            slow.feed(whole)
            with pytest.raises(RemoteProtocolError, match="exceeds"):
                slow.drain()
