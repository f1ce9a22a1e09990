"""History identity: which transactions two nodes share, even when their generations agree.

A generation orders the masters that force master hands over to, but it cannot tell apart
two nodes promoted by hand while cut off from each other: both reach the same generation and
both write the same txids. So every promotion also mints a random **history id**, and every
node keeps its *history*: the ``(history_id, first_txid)`` boundaries of the lineage it holds,
oldest first (Redis keeps the last two as ``replid``/``replid2`` with an offset; this keeps
the whole chain, bounded). Transaction `t` belongs to the history of the last boundary whose
``first_txid <= t``; before the first boundary it belongs to the unnamed root ``""``.

Only the node that minted an id ever writes in it, so two nodes whose histories give txid `t`
the same id hold the same transactions up to `t`. The first txid at which the two mappings
disagree is where they diverged.
"""

from __future__ import annotations

from typing import Any

from ._errors import RemoteProtocolError

#: ``((history_id, first_txid), ...)``, first txids non-decreasing.
History = tuple[tuple[str, int], ...]

#: Boundaries kept; the oldest are dropped beyond this. A dropped boundary can only make two
#: nodes look diverged where they are not (a full sync), never equal where they are not.
MAX_HISTORY = 256
#: The longest history id accepted from a peer.
MAX_HISTORY_ID = 64


def history_id_at(history: History, txid: int) -> str:
    """Return the id of the history transaction `txid` belongs to (``""``: the root)."""
    found = ""
    for history_id, first in history:
        if first > txid:
            break
        found = history_id
    return found


def current_id(history: History) -> str:
    """The id new transactions are written in (the last boundary's), or ``""``."""
    return history[-1][0] if history else ""


def extend(history: History, history_id: str, txid: int) -> History:
    """The history of a node holding up to `txid` that starts writing in `history_id`.

    Boundaries past `txid` are dropped first: they name transactions this node never held
    (it learned them from a master it had not caught up with).
    """
    kept = tuple(entry for entry in history if entry[1] <= txid)
    return (*kept, (history_id, txid + 1))[-MAX_HISTORY:]


def common_txid(a: History, txid_a: int, b: History, txid_b: int) -> int:
    """The last txid up to which the two nodes hold the same transactions."""
    limit = min(txid_a, txid_b)
    # The mappings only change at boundaries, so those (and txid 1) are the places to look.
    points = sorted({1, *(first for _, first in a), *(first for _, first in b)})
    for point in points:
        if point > limit:
            break
        if history_id_at(a, point) != history_id_at(b, point):
            return point - 1
    return limit


def descends_from(history: History, ancestor: History) -> bool:
    """Whether `history` continues `ancestor`'s current history in a newer one.

    True when `ancestor`'s current boundary appears in `history` followed by another: a node
    was promoted after holding `ancestor`'s history, so `ancestor` was superseded.
    """
    if not ancestor:
        return False
    last = ancestor[-1]
    for index, entry in enumerate(history):
        if entry == last:
            return index + 1 < len(history)
    return False


def to_wire(history: History) -> list[Any]:
    """The msgpack-ready form: ``[[id, first_txid], ...]``."""
    return [[history_id, first] for history_id, first in history]


def from_wire(value: Any) -> History:
    """Check and convert a history received from a peer.

    Raises:
        RemoteProtocolError: the value is not a well-formed history.
    """
    if not isinstance(value, list) or len(value) > MAX_HISTORY:
        raise RemoteProtocolError(f"history must be a list of at most {MAX_HISTORY} entries")
    result: list[tuple[str, int]] = []
    previous = 0
    for entry in value:
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and type(entry[0]) is str
            and 0 < len(entry[0]) <= MAX_HISTORY_ID
            and type(entry[1]) is int
            and previous <= entry[1] < 2**63
        ):
            raise RemoteProtocolError(f"malformed history entry {entry!r:.60}")
        previous = entry[1]
        result.append((entry[0], entry[1]))
    return tuple(result)
