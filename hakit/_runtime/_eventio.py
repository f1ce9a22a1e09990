"""One event as one JSON line, and back: the format of `EventLog.save` and `EventLog.load`.

Lines are canonical (sorted keys, no spaces, floats as Python prints them), so the same run
gives the same bytes. A `MessageEvent` keeps its frame whole (base64) beside the decoded
fields, which are written for people and `hakit replay` and recomputed on load.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import TYPE_CHECKING, Any

from ..protocol import StopReason

if TYPE_CHECKING:
    from ._events import Event


def dump_event(event: Event) -> str:
    """Return one event as a canonical JSON line (without the newline)."""
    record: dict[str, Any] = {"type": type(event).__name__}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if isinstance(value, StopReason):
            value = value.name
        elif isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        record[f.name] = value
    if record["type"] == "MessageEvent":
        record["fields"] = event.fields  # type: ignore[attr-defined]
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def load_event(line: str, classes: dict[str, type[Event]]) -> Event:
    """Rebuild an event from a line made by `dump_event`.

    Raises:
        ValueError: the line is not JSON, or names no known event.
        KeyError, TypeError: a field is missing or of the wrong kind.
    """
    record = json.loads(line)
    if not isinstance(record, dict):
        raise TypeError("an event line is a JSON object")
    cls = classes.get(record.get("type", ""))
    if cls is None:
        raise ValueError(f"unknown event type {record.get('type')!r}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in record:
            if f.default is not dataclasses.MISSING:
                continue
            raise KeyError(f"{cls.__name__} needs {f.name!r}")
        value = record[f.name]
        if f.type == "StopReason":
            value = StopReason[value]
        elif f.type == "bytes":
            value = base64.b64decode(value, validate=True)
        values[f.name] = value
    return cls(**values)
