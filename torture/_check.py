"""The checker: the five properties of a torture run (issue 8), over what the harness saw.

(a) no acknowledged write lost on the final master (one discarded by a divergence and kept in
`node.discarded()` is counted, not lost); (b) never two writers in one history; (c) every
replica that synced with the final master holds exactly its contents; (d) no node crashed
and (e) every error stayed inside the documented contract are recorded while the run goes
(see `torture._run`), together with liveness failures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import hakit

if TYPE_CHECKING:
    from ._run import Harness, Violation


def check(harness: Harness, final: hakit.Node | None) -> list[Violation]:
    """Return the violations of (a), (b) and (c) once every node rejoined `final`."""
    from ._run import Violation

    found: list[Violation] = []
    # (b) one writer per history (DESIGN/README: two nodes promoted by hand while cut off
    # may share a generation, never a history): among successful commits.
    writers: dict[str, set[str]] = {}
    for write in harness.writes:
        result = write.result
        if result is not None and result.generation > 0:
            history = result.history or f"generation {result.generation}"
            writers.setdefault(history, set()).add(write.node)
    for history, names in sorted(writers.items()):
        if len(names) > 1:
            found.append(Violation(
                "two-writers", f"history {history} had writers {', '.join(sorted(names))}"
            ))  # fmt: skip
    if final is None:
        return found
    # (c) every node that caught up with the final master holds exactly its contents.
    expected = dict(final.items())
    for node in harness.nodes.values():
        if node is final or not harness._joined(node, final):
            continue  # one that never rejoined is reported as a liveness failure
        got = dict(node.items())
        if got != expected:
            found.append(Violation(
                "diverged",
                f"{node.name} and the final master {final.name} both hold txid {final.txid} "
                f"(generations {node.storage.last_generation}/{final.storage.last_generation}) "
                f"with different contents: {_diff(got, expected)}",
            ))  # fmt: skip
    # (a) every write a replica acknowledged is on the final master.
    # A write discarded by a divergence and kept in node.discarded() is not lost silently:
    # it is counted, not reported (README: HistoryDiverged, as MongoDB keeps rollback data).
    kept = _discarded(harness)
    missing = [
        (write, key)
        for write in harness.writes
        if write.sync and write.result is not None and write.result.acked
        for key in write.keys
        if final.get(key) != write.value
    ]
    lost = [(write, key) for write, key in missing if (key, write.value) not in kept]
    harness.discarded_acknowledged = len(missing) - len(lost)
    for write, key in lost[:3]:
        result = write.result
        assert result is not None
        found.append(Violation(
            "lost",
            f"{key}={write.value!r} (txid {result.txid}, generation {result.generation}, "
            f"acknowledged by {', '.join(result.acked)}) is not on the final master "
            f"{final.name} (generation {final.generation}): it holds {final.get(key)!r}",
        ))  # fmt: skip
    if len(lost) > 3:
        found.append(Violation("lost", f"... and {len(lost) - 3} more acknowledged keys"))
    return found


def _discarded(harness: Harness) -> set[tuple[Any, Any]]:
    """Return every ``(key, value)`` some node discarded and kept.

    That is the puts of its discarded transactions, and the values its full load replaced.
    """
    kept: set[tuple[Any, Any]] = set()
    for node in harness.nodes.values():
        for record in node.discarded():
            for transaction in record.transactions:
                for op in transaction.ops:
                    if len(op) == 3:
                        kept.add((op[1], op[2]))
            kept.update((key, value) for key, value in record.replaced)
    return kept


def _diff(got: dict[Any, Any], expected: dict[Any, Any]) -> str:
    only_got = sorted(map(str, got.keys() - expected.keys()))
    only_expected = sorted(map(str, expected.keys() - got.keys()))
    changed = sorted(str(k) for k in got.keys() & expected.keys() if got[k] != expected[k])
    parts = []
    if only_got:
        parts.append(f"only on the replica: {', '.join(only_got[:4])}")
    if only_expected:
        parts.append(f"missing on the replica: {', '.join(only_expected[:4])}")
    if changed:
        parts.append(f"different: {', '.join(changed[:4])}")
    return "; ".join(parts)
