"""Seeded generators of hostile frames: garbage, random msgpack, mutated real messages.

Everything here is a pure function of a `random.Random`, so one seed gives one sequence of
cases. A case is what one attacker connection sends: an opening (nothing, a valid channel
hello, or a valid replica hello, which puts the frames that follow in that phase of the
protocol), then the fuzzed frames, then how the connection ends.
"""

from __future__ import annotations

import dataclasses
import random
import struct
from dataclasses import dataclass, field
from typing import Any

import msgpack

from hakit.protocol import _messages as m
from hakit.protocol._codec import DEFAULT_MAX_FRAME_SIZE, HANDSHAKE_LIMITS

#: Integers at the edges of every range a field might be checked against.
_EDGE_INTS = (0, 1, 2, 3, 7, 127, 128, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1,
              2**32, 2**53, 2**63 - 1, 2**63, 2**64 - 1, -1, -2, -(2**31), -(2**63))  # fmt: skip
_KINDS = [int(k) for k in m.Kind]
#: The messages a master may receive from a replica once it is attached.
_REPLICA_SIDE = (m.Ack, m.KeepAlive, m.Bye, m.PromoteRequest, m.KillMaster)
#: The openings of a connection (what a master may receive first).
_FIRST = (m.Hello, m.Cancel, m.ChannelHello)
_ALL = tuple(cls for cls in m._CLASSES.values())  # every message class, by kind


@dataclass
class Case:
    """What one attacker connection sends, and how it ends."""

    id: int
    kind: str
    opening: str  #: "none", "channel" or "replica"
    frames: list[bytes] = field(default_factory=list)
    #: "close" (at once, maybe with unread data: a reset), "drain" (half-close, read to the
    #: end), or "hold" (keep the connection open `hold` seconds first: slow and partial).
    ending: str = "close"
    hold: float = 0.0
    #: How many of `frames` (at their start) are valid channel traffic, not hostile.
    valid: int = 0
    #: Send the frames this many bytes at a time, pausing `pause` s between writes.
    chunk: int = 0
    pause: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form (frames in hex) for the failure file."""
        out = dataclasses.asdict(self)
        out["frames"] = [f.hex() for f in self.frames]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Case:
        """Inverse of `to_json`."""
        data = dict(data)
        data["frames"] = [bytes.fromhex(f) for f in data["frames"]]
        return cls(**data)


def prefix(size: int) -> bytes:
    """A frame's 4-byte length prefix."""
    return struct.pack(">I", size)


def framed(payload: bytes) -> bytes:
    """A payload behind its true length prefix."""
    return prefix(len(payload)) + payload


class Generator:
    """Makes fuzz cases from one seed.

    Args:
        seed: the seed of every random choice.
        generation: the master's generation (plausible frames carry it, or one near it).
    """

    def __init__(self, seed: int, generation: int) -> None:
        self.rng = random.Random(seed)
        self.generation = generation
        self.count = 0

    # -- values ------------------------------------------------------------------------------
    def _int(self) -> int:
        rng = self.rng
        roll = rng.random()
        if roll < 0.5:
            return rng.choice(_EDGE_INTS)
        if roll < 0.7:
            return self.generation + rng.choice((-1, 0, 1, 2))
        return rng.randint(-(2**63), 2**64 - 1) if rng.random() < 0.2 else rng.randint(0, 1000)

    def _text(self) -> str:
        rng = self.rng
        alphabet = "abcxyz/0:é\u2603\x00 "
        return "".join(rng.choice(alphabet) for _ in range(rng.choice((0, 1, 3, 8, 40))))

    def value(self, depth: int = 0) -> Any:
        """A random msgpack-encodable value of any type, nested a little."""
        rng = self.rng
        roll = rng.randrange(11 if depth < 3 else 8)
        if roll == 0:
            return None
        if roll == 1:
            return rng.random() < 0.5
        if roll in (2, 3):
            return self._int()
        if roll == 4:
            return rng.choice((0.0, -0.0, 1.5, float("inf"), float("nan"), 1e300))
        if roll == 5:
            return self._text()
        if roll in (6, 7):
            return rng.randbytes(rng.choice((0, 1, 4, 16, 100)))
        if roll in (8, 9):
            return [self.value(depth + 1) for _ in range(rng.choice((0, 1, 2, 5)))]
        return {self.value(3): self.value(depth + 1) for _ in range(rng.choice((0, 1, 3)))}

    def _plausible(self, name: str, annotation: str) -> Any:
        """A value a real peer could send in the field `name`."""
        rng = self.rng
        known: dict[str, Any] = {
            "generation": self.generation,
            "version": m.PROTOCOL_VERSION,
            "cluster": "hakit",
            "flags": 0,
            "address": None,
            "txid": rng.choice((0, 1, rng.randint(0, 5000))),
            "last_generation": max(0, self.generation - 1),
            "node": f"fz{rng.randrange(10_000)}",
            "req_id": rng.randint(1, 1000),
            "limit": 0,
            "parts": [rng.randbytes(rng.choice((0, 3, 20)))],
            "stop_reason": rng.randrange(0, 12),
            "code": rng.randrange(1, 6),
            "detail": "fuzz",
            "count": rng.randrange(0, 10),
            "items": [],
            "entries": [],
            "master": "m",
            "sync": rng.randrange(0, 3),
        }
        if name in known:
            return known[name]
        # A field this generator does not know yet (the protocol grew): a value of its type.
        if "int" in annotation:
            return rng.randint(0, 100)
        if "bytes" in annotation:
            return rng.randbytes(16)
        if "str" in annotation:
            return self._text()
        if "list" in annotation:
            return []
        return None

    def real(self, cls: type[m.Message]) -> list[Any]:
        """The wire form of a plausible message of class `cls`."""
        wire: list[Any] = [int(cls.KIND)]
        for f in dataclasses.fields(cls):
            if f.default_factory is not dataclasses.MISSING and self.rng.random() < 0.7:
                wire.append(f.default_factory())
            elif f.default is not dataclasses.MISSING and self.rng.random() < 0.7:
                wire.append(f.default)
            else:
                wire.append(self._plausible(f.name, str(f.type)))
        if cls is m.Txns:
            wire[2:] = [[self.rng.randint(1, 9), self.generation, [[0, "k", 1]]]]
        return wire

    # -- frames ------------------------------------------------------------------------------
    def mutate(self, wire: list[Any]) -> list[Any]:
        """Change one or a few things in a message's wire form."""
        rng = self.rng
        wire = list(wire)
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            op = rng.randrange(7)
            if op <= 2 and len(wire) > 1:  # one field gets a value of any type
                wire[rng.randrange(1, len(wire))] = self.value()
            elif op == 3 and len(wire) > 1:  # a field goes missing
                del wire[rng.randrange(len(wire))]
            elif op == 4:  # one field too many
                wire.insert(rng.randrange(len(wire) + 1), self.value())
            elif op == 5 and wire:  # another kind, known or not
                wire[0] = rng.choice((*_KINDS, 0, 19, 24, 99, -1, 2**32, "1", None))
            elif len(wire) > 1:  # an integer field off by a little
                index = rng.randrange(1, len(wire))
                if type(wire[index]) is int:
                    changed = wire[index] + rng.choice((-1, 1, 2**32, -(2**32)))
                    wire[index] = min(max(changed, -(2**63)), 2**64 - 1)  # msgpack's range
        return wire

    def _encode(self, value: Any) -> bytes:
        return msgpack.packb(value, use_bin_type=self.rng.random() < 0.95)

    def _bytewise(self, payload: bytes) -> bytes:
        """Flip, drop, insert or overwrite a few bytes of a payload."""
        rng = self.rng
        data = bytearray(payload)
        for _ in range(rng.choice((1, 2, 4))):
            op = rng.randrange(4)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
            elif op == 1 and data:
                del data[min(pos, len(data) - 1)]
            elif op == 2:
                data[pos:pos] = rng.randbytes(rng.randint(1, 4))
            elif data:
                data[min(pos, len(data) - 1)] = rng.choice((0xC1, 0xDD, 0xDF, 0xC6, 0xFF, 0x90))
        return bytes(data)

    def frame(self, phase: str) -> bytes:
        """One hostile frame for a connection in `phase` ("none", "channel", "replica")."""
        rng = self.rng
        roll = rng.random()
        if phase == "channel":
            pool: tuple[type[m.Message], ...] = (m.ChannelMsg,) * 6 + _ALL
        elif phase == "replica":
            pool = _REPLICA_SIDE * 3 + _ALL
        else:
            pool = _FIRST * 3 + _ALL
        if roll < 0.08:  # raw garbage, no framing at all
            return rng.randbytes(rng.randint(1, 300))
        if roll < 0.18:  # random bytes behind a valid prefix
            return framed(rng.randbytes(rng.randint(0, 300)))
        if roll < 0.28:  # any msgpack value
            return framed(self._encode(self.value()))
        if roll < 0.33:  # a prefix that lies about the length
            payload = self._encode(self.real(rng.choice(pool)))
            return prefix(max(0, len(payload) + rng.choice((-3, -1, 1, 5)))) + payload
        if roll < 0.37:  # oversized, or just over the phase's limit
            size = rng.choice((
                DEFAULT_MAX_FRAME_SIZE + 1, 2**32 - 1, HANDSHAKE_LIMITS.max_frame_size + 1,
                rng.randint(2**24, 2**32 - 1),
            ))  # fmt: skip
            return prefix(size) + rng.randbytes(rng.randint(0, 64))
        if roll < 0.45:  # costly shapes: many small containers, long arrays
            return framed(self._costly())
        wire = self.real(rng.choice(pool))
        if roll < 0.55 and phase == "channel":  # a valid request: keeps the connection alive
            wire = self.real(m.ChannelMsg)
            return framed(self._encode(wire))
        if roll < 0.65:  # a real message with one integer at an edge: range checks
            ints = [i for i, v in enumerate(wire) if i and type(v) is int]
            if ints:
                wire[rng.choice(ints)] = self._int()
            return framed(self._encode(wire))
        if roll < 0.85:
            return framed(self._encode(self.mutate(wire)))
        return framed(self._bytewise(self._encode(wire)))

    def _costly(self) -> bytes:
        rng = self.rng
        n = rng.choice((100, 4096, 65536, 70000))
        if rng.random() < 0.5:
            return b"\xdd" + struct.pack(">I", n) + b"\x90" * n  # n empty arrays
        inner = rng.choice((16, 256))
        one = b"\xdc" + struct.pack(">H", inner) + b"\x90" * inner
        outer = max(1, n // inner)
        return b"\xdd" + struct.pack(">I", outer) + one * outer  # nested

    # -- cases -------------------------------------------------------------------------------
    def case(self) -> Case:
        """The next case."""
        rng = self.rng
        self.count += 1
        roll = rng.random()
        opening = rng.choice(("none", "none", "channel", "channel", "channel", "replica"))
        if roll < 0.04:
            return self._slow(opening)
        if roll < 0.08:
            return self._partial(opening)
        kind = "frames"
        frames = [self.frame(opening) for _ in range(rng.choice((1, 1, 2, 4)))]
        if opening == "channel":
            # Valid traffic first, which the master reads and answers (a hostile frame ends
            # the connection, and nothing after it is read), then the hostile frames.
            valid = [self._request() for _ in range(rng.choice((0, 4, 16, 32, 64)))]
            frames = valid + frames
        else:
            valid = []
        ending = "drain" if rng.random() < 0.3 else "close"
        return Case(self.count, kind, opening, frames, ending, valid=len(valid))

    def _request(self) -> bytes:
        """A valid channel request or one-way message, of a few parts."""
        rng = self.rng
        req_id = rng.choice((0, rng.randint(1, 2**32)))
        parts = [rng.randbytes(rng.choice((0, 1, 8, 64))) for _ in range(rng.choice((0, 1, 3)))]
        wire = [int(m.Kind.CHANNEL_MSG), self.generation, req_id, 0, 0, parts]
        return framed(msgpack.packb(wire, use_bin_type=True))

    def _slow(self, opening: str) -> Case:
        rng = self.rng
        wire = self.real(m.ChannelMsg if opening == "channel" else rng.choice(_FIRST))
        frames = [framed(self._encode(wire))]
        return Case(self.count, "slow", opening, frames, "drain", chunk=rng.choice((1, 3, 7)),
                    pause=rng.choice((0.05, 0.2, 0.5)))  # fmt: skip

    def _partial(self, opening: str) -> Case:
        rng = self.rng
        size = rng.choice((1000, 65536, 1024 * 1024, 4 * 1024 * 1024, 16 * 1024 * 1024))
        sent = rng.randint(0, min(size - 1, 4 * 1024 * 1024))
        frames = [prefix(size) + rng.randbytes(sent)]
        return Case(self.count, "partial", opening, frames, "hold", hold=rng.uniform(1.0, 15.0))
