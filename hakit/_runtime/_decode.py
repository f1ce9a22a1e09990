"""Frames as people read them: a message's kind and fields, JSON-friendly and shortened.

Used by the event log (`MessageEvent.kind`, `MessageEvent.fields`) and so by the timeline.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack

from ..protocol import Kind, RemoteProtocolError, StopReason, SyncKind, parse_message

# Long values are shortened so that a saved log and a tooltip stay readable.
_MAX_ITEMS = 16
_MAX_TEXT = 120
_ENUMS: dict[str, Any] = {"stop_reason": StopReason, "sync": SyncKind}
# Once per frame on every traced link: a dict lookup, not an enum call.
_KIND_NAMES = {int(kind): kind.name for kind in Kind}


def frame_kind(payload: bytes) -> str:
    """Return the kind name of a message payload (``"?"`` if it is no message)."""
    # Fast path: [kind, ...] packs as an array header (fixarray, or array 16/32 for a Txns
    # batch of many entries) followed by the kind as a positive fixint; decoding a large
    # batch whole just to name it would cost more than everything else the log does.
    size = len(payload)
    if size > 1:
        head = payload[0]
        at = 1 if head & 0xF0 == 0x90 else 3 if head == 0xDC else 5 if head == 0xDD else 0
        if at and size > at and payload[at] < 0x80:
            return _KIND_NAMES.get(payload[at], "?")
    try:
        value = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        return Kind(value[0]).name
    except Exception:  # any undecodable payload is simply "not a message"
        return "?"


def frame_fields(payload: bytes) -> dict[str, Any]:
    """Return a message payload's fields by name, shortened and JSON-friendly.

    Bytes that are no hakit message give ``{"raw": "<repr>"}``.
    """
    try:
        value = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        message = parse_message(value)
    except (RemoteProtocolError, ValueError, TypeError, msgpack.UnpackException):
        return {"raw": _text(repr(payload))}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(message):
        item = getattr(message, f.name)
        enum = _ENUMS.get(f.name)
        if enum is not None and isinstance(item, int):
            try:
                out[f.name] = enum(item).name
                continue
            except ValueError:
                pass
        out[f.name] = jsonable(item)
    return out


def jsonable(value: Any, depth: int = 0) -> Any:
    """Return `value` as JSON types: bytes as their repr, long lists and texts cut short."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return _text(repr(bytes(value)))
    if depth > 4:
        return "..."
    if isinstance(value, list | tuple):
        items = [jsonable(v, depth + 1) for v in value[:_MAX_ITEMS]]
        if len(value) > _MAX_ITEMS:
            items.append(f"... {len(value) - _MAX_ITEMS} more")
        return items
    if isinstance(value, dict):
        pairs = list(value.items())
        out = {str(k): jsonable(v, depth + 1) for k, v in pairs[:_MAX_ITEMS]}
        if len(pairs) > _MAX_ITEMS:
            out["..."] = f"{len(pairs) - _MAX_ITEMS} more"
        return out
    return _text(repr(value))


def _text(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."
