"""The Storage contract, run against every backend."""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hakit.storage import DELETE, PUT, Entry, Key, MemoryStorage, SqliteStorage, Storage

BACKENDS = ["memory", "sqlite"]


def make_storage(backend: str, directory: Path) -> Storage:
    if backend == "memory":
        return MemoryStorage()
    return SqliteStorage(directory / "db.sqlite")


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    db = make_storage(request.param, tmp_path)
    yield db
    db.close()


def put(key: Any, value: Any) -> list[Any]:
    return [PUT, key, value]


def delete(key: Key) -> list[Any]:
    return [DELETE, key]


def contents(db: Storage) -> dict[Key, Any]:
    pairs = list(db.items())
    result = dict(pairs)
    assert len(result) == len(pairs), "items() yielded a key twice"
    return result


def state(db: Storage) -> tuple[int, int, int, int, dict[Key, Any]]:
    return db.txid, db.last_generation, db.generation, len(db), contents(db)


def snapshot_contents(db: Storage, max_items: int = 1000) -> tuple[int, int, int, dict[Key, Any]]:
    snap = db.snapshot()
    try:
        flat = [x for chunk in snap.chunks(max_items) for x in chunk]
        data = dict(zip(flat[::2], flat[1::2], strict=True))
        assert len(data) * 2 == len(flat), "a snapshot yielded a key twice"
        return snap.txid, snap.last_generation, snap.count, data
    finally:
        snap.close()


def fill(db: Storage, data: Mapping[Any, Any], generation: int = 0) -> None:
    """Commit `data` as one transaction."""
    db.apply([[db.txid + 1, generation, [put(k, v) for k, v in data.items()]]])


# -- basics -----------------------------------------------------------------------------------


def test_empty_state(storage: Storage) -> None:
    assert storage.txid == 0
    assert storage.last_generation == 0
    assert storage.generation == 0
    assert len(storage) == 0
    assert list(storage.items()) == []
    assert storage.get("missing") is None
    assert storage.get("missing", 7) == 7


def test_apply_puts_and_deletes(storage: Storage) -> None:
    storage.apply([[1, 0, [put("a", 1), put("b", 2), put(b"c", 3)]]])
    assert (storage.txid, storage.last_generation) == (1, 0)
    assert contents(storage) == {"a": 1, "b": 2, b"c": 3}

    storage.apply([[2, 1, [delete("a"), put("b", 20)]], [3, 1, [delete(b"c"), put("d", 4)]]])
    assert (storage.txid, storage.last_generation) == (3, 1)
    assert contents(storage) == {"b": 20, "d": 4}
    assert len(storage) == 2
    assert storage.get("a") is None
    assert storage.get("b") == 20


def test_ops_apply_in_order(storage: Storage) -> None:
    storage.apply(
        [
            [1, 0, [put("k", 1), delete("k"), put("k", 2), put("j", 1)]],
            [2, 0, [put("j", 2), delete("j"), delete("j")]],
            [3, 0, [delete("k"), put("k", 3)]],
        ]
    )
    assert contents(storage) == {"k": 3}


def test_delete_of_missing_key_is_a_no_op(storage: Storage) -> None:
    storage.apply([[1, 0, [delete("nothing")]]])
    assert storage.txid == 1
    assert len(storage) == 0


def test_transaction_without_ops_advances_txid(storage: Storage) -> None:
    storage.apply([[1, 0, []], [2, 0, []]])
    assert storage.txid == 2
    assert len(storage) == 0


def test_empty_batch_changes_nothing(storage: Storage) -> None:
    fill(storage, {"a": 1})
    before = state(storage)
    storage.apply([])
    assert state(storage) == before


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param([[4, 0, [put("x", 1)]]], id="gap"),
        pytest.param([[2, 0, [put("x", 1)]]], id="replayed-txid"),
        pytest.param([[0, 0, [put("x", 1)]]], id="txid-zero"),
        pytest.param([[3, 0, [put("x", 1)]], [5, 0, [put("y", 1)]]], id="gap-inside-batch"),
        pytest.param([[3, 0, [put("x", 1)]], [3, 0, [put("y", 1)]]], id="repeat-inside-batch"),
        pytest.param([["3", 0, [put("x", 1)]]], id="txid-not-int"),
        pytest.param([[3, "0", [put("x", 1)]]], id="generation-not-int"),
        pytest.param([[3, 0, [put("x", 1)]], [4, 0, [[7, "y", 1]]]], id="unknown-op"),
        pytest.param([[3, 0, [put("x", 1)]], [4, 0, [[PUT, "y"]]]], id="put-without-value"),
        pytest.param([[3, 0, [put("x", 1)]], [4, 0, [[DELETE, "y", 1]]]], id="delete-with-value"),
        pytest.param([[3, 0, [put("x", 1)]], [4, 0, [put(5, 1)]]], id="int-key"),
        pytest.param([[3, 0, [put("x", 1)]], [4, 0, [[]]]], id="empty-op"),
        pytest.param([[3, 0, [put("x", 1)]], [4, 0]], id="short-entry"),
        pytest.param([[3, 0, [put("x", 1)]], [4, 0, None]], id="ops-not-a-list"),
    ],
)
def test_bad_batch_raises_and_changes_nothing(storage: Storage, batch: list[Entry]) -> None:
    storage.apply([[1, 0, [put("a", 1)]], [2, 0, [put("b", 2), delete("a")]]])
    before = state(storage)
    with pytest.raises(ValueError):  # noqa: PT011 - the contract names only the type
        storage.apply(batch)
    assert state(storage) == before
    # The storage still works: the next consecutive transaction is accepted.
    storage.apply([[3, 0, [put("c", 3)]]])
    assert contents(storage) == {"b": 2, "c": 3}


def test_str_and_bytes_keys_are_distinct(storage: Storage) -> None:
    storage.apply([[1, 0, [put("a", "text"), put(b"a", "bytes"), put("", 1), put(b"", 2)]]])
    assert len(storage) == 4
    assert storage.get("a") == "text"
    assert storage.get(b"a") == "bytes"
    assert contents(storage) == {"a": "text", b"a": "bytes", "": 1, b"": 2}
    storage.apply([[2, 0, [delete(b"a")]]])
    assert storage.get("a") == "text"
    assert storage.get(b"a") is None
    _, _, _, snap = snapshot_contents(storage)
    assert snap == {"a": "text", "": 1, b"": 2}
    assert {type(k) for k in snap} == {str, bytes}


VALUES: list[Any] = [
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    "",
    "héllo ✓",
    b"",
    b"\x00\xff",
    [],
    [1, "two", b"three", None, [4.5]],
    {},
    {"a": 1, "b": [True, None], "c": {"d": b"e"}},
    {1: "int key", 2: "two"},
    None,
    0.0,
    -2.5,
    1e300,
    float("inf"),
    True,
    False,
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_values_round_trip(storage: Storage, value: Any) -> None:
    storage.apply([[1, 0, [put("k", value)]]])
    got = storage.get("k")
    assert got == value
    assert type(got) is type(value)
    assert contents(storage) == {"k": value}
    _, _, _, snap = snapshot_contents(storage)
    assert snap == {"k": value}
    assert type(snap["k"]) is type(value)


# -- generations ------------------------------------------------------------------------------


def test_generation_is_kept_and_never_lowered(storage: Storage) -> None:
    storage.set_generation(3)
    assert storage.generation == 3
    storage.set_generation(3)  # the same value is allowed
    with pytest.raises(ValueError, match="cannot go down"):
        storage.set_generation(2)
    assert storage.generation == 3
    storage.set_generation(5)
    assert storage.generation == 5
    # Applying transactions records their generation but leaves the node's own alone.
    storage.apply([[1, 4, [put("a", 1)]]])
    assert (storage.last_generation, storage.generation) == (4, 5)


def test_generation_must_be_an_int(storage: Storage) -> None:
    with pytest.raises(TypeError):
        storage.set_generation("4")  # type: ignore[arg-type]
    assert storage.generation == 0


# -- snapshots --------------------------------------------------------------------------------


def test_snapshot_is_isolated_from_later_writes(storage: Storage) -> None:
    initial = {f"k{i}": i for i in range(50)}
    fill(storage, initial, generation=2)
    snap = storage.snapshot()
    try:
        storage.apply(
            [
                [2, 3, [put("k0", "changed"), delete("k1"), put("new", 1)]],
                [3, 3, [delete("k2")]],
            ]
        )
        storage.set_generation(3)
        assert (snap.txid, snap.last_generation, snap.count) == (1, 2, 50)
        flat = [x for chunk in snap.chunks(7) for x in chunk]
        assert dict(zip(flat[::2], flat[1::2], strict=True)) == initial
    finally:
        snap.close()
    # The storage itself moved on.
    assert storage.txid == 3
    assert storage.get("k0") == "changed"
    assert "new" in contents(storage)


@pytest.mark.parametrize("max_items", [1, 3, 10, 11, 1000])
def test_chunks_respect_max_items_and_cover_each_pair_once(
    storage: Storage, max_items: int
) -> None:
    data: dict[Key, Any] = {f"k{i}": i for i in range(5)}
    data.update({f"k{i}".encode(): [i] for i in range(5)})
    fill(storage, data)
    snap = storage.snapshot()
    try:
        for _ in range(2):  # chunks() can be walked more than once
            chunks = list(snap.chunks(max_items))
            assert chunks, "a non-empty snapshot yields at least one chunk"
            assert all(0 < len(chunk) <= 2 * max_items for chunk in chunks)
            assert all(len(chunk) % 2 == 0 for chunk in chunks)
            flat = [x for chunk in chunks for x in chunk]
            keys = flat[::2]
            assert len(keys) == len(set(keys)) == 10
            assert dict(zip(keys, flat[1::2], strict=True)) == data
            assert len(chunks) == -(-10 // max_items)
    finally:
        snap.close()


def test_snapshot_of_empty_storage(storage: Storage) -> None:
    snap = storage.snapshot()
    try:
        assert (snap.txid, snap.last_generation, snap.count) == (0, 0, 0)
        assert list(snap.chunks(10)) == []
    finally:
        snap.close()


def test_chunks_rejects_bad_max_items_and_closed_snapshot(storage: Storage) -> None:
    snap = storage.snapshot()
    with pytest.raises(ValueError, match="max_items"):
        snap.chunks(0)
    snap.close()
    snap.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        snap.chunks(10)


def test_several_snapshots_at_different_points(storage: Storage) -> None:
    fill(storage, {"a": 1})
    first = storage.snapshot()
    fill(storage, {"b": 2})
    second = storage.snapshot()
    fill(storage, {"c": 3})
    try:
        assert first.txid == 1
        assert first.count == 1
        assert second.txid == 2
        assert second.count == 2
        assert [x for c in first.chunks(10) for x in c] == ["a", 1]
        assert sorted(x for c in second.chunks(10) for x in c[::2]) == ["a", "b"]
    finally:
        first.close()
        second.close()


def test_items_is_not_disturbed_by_writes_during_iteration(storage: Storage) -> None:
    data = {f"k{i:04}": i for i in range(3000)}
    fill(storage, data)
    it = storage.items()
    seen = dict([next(it)])
    storage.apply([[2, 0, [delete(f"k{i:04}") for i in range(0, 3000, 2)] + [put("new", 1)]]])
    seen.update(it)
    assert seen == data
    assert len(storage) == 1501


# -- full load --------------------------------------------------------------------------------


def test_load_commit_replaces_everything(storage: Storage) -> None:
    fill(storage, {"old": 1, "both": "old"}, generation=1)
    storage.set_generation(1)
    loader = storage.begin_load()
    loader.add(["both", "new", b"x", 1])
    loader.add([])
    loader.add(["y", [1, 2], "z", None])
    loader.commit(42, 2, 3)
    assert state(storage) == (42, 2, 3, 4, {"both": "new", b"x": 1, "y": [1, 2], "z": None})
    assert storage.get("old") is None
    assert snapshot_contents(storage)[:3] == (42, 2, 4)
    # Transactions continue from the loaded txid.
    with pytest.raises(ValueError):  # noqa: PT011
        storage.apply([[2, 3, [put("a", 1)]]])
    storage.apply([[43, 3, [put("a", 1)]]])
    assert storage.get("a") == 1


def test_load_of_nothing_empties_the_storage(storage: Storage) -> None:
    fill(storage, {"a": 1})
    loader = storage.begin_load()
    loader.commit(0, 0, 0)
    assert state(storage) == (0, 0, 0, 0, {})


def test_load_repeated_key_keeps_the_last_value(storage: Storage) -> None:
    loader = storage.begin_load()
    loader.add(["k", 1, "k", 2])
    loader.add(["k", 3])
    loader.commit(1, 0, 0)
    assert contents(storage) == {"k": 3}


def test_load_abort_keeps_old_data(storage: Storage) -> None:
    fill(storage, {"a": 1, b"b": 2}, generation=0)
    storage.set_generation(2)
    before = state(storage)
    loader = storage.begin_load()
    loader.add(["x", 1, "y", 2])
    loader.abort()
    loader.abort()  # idempotent
    assert state(storage) == before
    with pytest.raises(RuntimeError):
        loader.add(["z", 1])
    with pytest.raises(RuntimeError):
        loader.commit(9, 9, 9)
    assert state(storage) == before
    # Writes work again, and so does a new load.
    fill(storage, {"c": 3})
    loader = storage.begin_load()
    loader.add(["only", 1])
    loader.commit(10, 2, 2)
    assert contents(storage) == {"only": 1}


def test_reads_during_a_load_see_the_old_data(storage: Storage) -> None:
    fill(storage, {"a": 1, "b": 2}, generation=1)
    before = state(storage)
    loader = storage.begin_load()
    try:
        loader.add(["a", "new", "c", 3])
        assert state(storage) == before
        assert storage.get("a") == 1
        assert storage.get("c") is None
        assert snapshot_contents(storage) == (1, 1, 2, {"a": 1, "b": 2})
        snap = storage.snapshot()  # taken during the load, read after its commit
        loader.add(["d", 4])
        loader.commit(7, 1, 1)
    finally:
        loader.abort()
    try:
        flat = [x for chunk in snap.chunks(10) for x in chunk]
        assert (snap.txid, dict(zip(flat[::2], flat[1::2], strict=True))) == (1, {"a": 1, "b": 2})
    finally:
        snap.close()
    assert contents(storage) == {"a": "new", "c": 3, "d": 4}


def test_writes_during_a_load_are_refused(storage: Storage) -> None:
    fill(storage, {"a": 1})
    before = state(storage)
    loader = storage.begin_load()
    try:
        with pytest.raises(RuntimeError, match="load"):
            storage.apply([[2, 0, [put("b", 2)]]])
        with pytest.raises(RuntimeError, match="load"):
            storage.set_generation(5)
        with pytest.raises(RuntimeError, match="load"):
            storage.begin_load()
    finally:
        loader.abort()
    assert state(storage) == before


def test_load_commit_with_lower_generation_fails_and_aborts(storage: Storage) -> None:
    fill(storage, {"a": 1})
    storage.set_generation(4)
    before = state(storage)
    loader = storage.begin_load()
    loader.add(["x", 1])
    with pytest.raises(ValueError, match="cannot go down"):
        loader.commit(9, 3, 3)
    assert state(storage) == before
    with pytest.raises(RuntimeError):
        loader.add(["y", 1])
    # The failed commit ended the load: writes and a new load work.
    fill(storage, {"b": 2})
    loader = storage.begin_load()
    loader.commit(9, 4, 4)
    assert state(storage) == (9, 4, 4, 0, {})


def test_a_forced_load_may_take_the_generation_back(storage: Storage) -> None:
    # FORCE_SYNC: a replica gives up a branch of its own, and its generation, for the master's.
    fill(storage, {"a": 1})
    storage.set_generation(4)
    loader = storage.begin_load()
    loader.add(["x", 1])
    loader.commit(9, 2, 2, forced=True)
    assert state(storage) == (9, 2, 2, 1, {"x": 1})
    with pytest.raises(ValueError, match="cannot go down"):
        storage.set_generation(1)


@pytest.mark.parametrize(
    "chunk",
    [
        pytest.param(["a", 1, "b"], id="odd-length"),
        pytest.param(["a", 1, 2, 3], id="int-key"),
        pytest.param([None, 1], id="none-key"),
    ],
)
def test_load_add_rejects_bad_chunks(storage: Storage, chunk: list[Any]) -> None:
    loader = storage.begin_load()
    try:
        loader.add(["ok", 1])
        with pytest.raises(ValueError):  # noqa: PT011
            loader.add(chunk)
        # The bad chunk staged nothing; the load goes on.
        loader.add(["also", 2])
        loader.commit(3, 0, 0)
    finally:
        loader.abort()
    assert contents(storage) == {"ok": 1, "also": 2}


def test_loader_context_manager_aborts_on_error(storage: Storage) -> None:
    fill(storage, {"a": 1})
    before = state(storage)
    # Both backends' loaders are context managers (beyond the Loader protocol).
    loader: Any = storage.begin_load()

    def load_and_fail() -> None:
        with loader:
            loader.add(["x", 1])
            raise KeyError("boom")

    with pytest.raises(KeyError):
        load_and_fail()
    assert state(storage) == before
    fill(storage, {"b": 2})  # no load is left hanging


def test_close_during_a_load_aborts_it(storage: Storage) -> None:
    fill(storage, {"a": 1})
    loader = storage.begin_load()
    loader.add(["x", 1])
    storage.close()
    with pytest.raises(RuntimeError):
        loader.commit(5, 0, 0)


# -- model check ------------------------------------------------------------------------------

KEYS = st.one_of(st.sampled_from(["a", "b", "", "é"]), st.binary(max_size=1), st.text(max_size=2))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.binary(max_size=5),
)
VALUES_ST = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
OPS = st.one_of(
    st.tuples(st.just(PUT), KEYS, VALUES_ST).map(list),
    st.tuples(st.just(DELETE), KEYS).map(list),
)
# A run: batches of transactions, each transaction a list of ops.
BATCHES = st.lists(st.lists(st.lists(OPS, max_size=6), max_size=4), max_size=8)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=60)
@given(batches=BATCHES, snapshot_at=st.integers(min_value=0, max_value=8))
def test_random_transactions_agree_with_a_dict(
    backend: str, batches: list[list[list[list[Any]]]], snapshot_at: int
) -> None:
    # hypothesis runs many examples per test call, so the storage is made here rather than
    # by a function-scoped fixture.
    with tempfile.TemporaryDirectory() as directory:
        db = make_storage(backend, Path(directory))
        snap = None
        try:
            model: dict[Key, Any] = {}
            snap_model: dict[Key, Any] = {}
            txid = 0
            for index, batch in enumerate(batches):
                if index == snapshot_at:
                    snap, snap_model, snap_txid = db.snapshot(), dict(model), txid
                entries: list[Entry] = []
                for ops in batch:
                    txid += 1
                    entries.append([txid, 1, ops])
                    for op in ops:
                        if op[0] == PUT:
                            model[op[1]] = op[2]
                        else:
                            model.pop(op[1], None)
                db.apply(entries)
                assert db.txid == txid
                assert len(db) == len(model)
                assert contents(db) == model
            for key in model:
                assert db.get(key) == model[key]
            if snap is not None:
                flat = [x for chunk in snap.chunks(3) for x in chunk]
                assert (snap.txid, snap.count) == (snap_txid, len(snap_model))
                assert dict(zip(flat[::2], flat[1::2], strict=True)) == snap_model
        finally:
            if snap is not None:
                snap.close()
            db.close()


def test_abandoning_chunks_after_close_is_quiet(storage: Storage) -> None:
    # filterwarnings=error turns an exception raised while a generator is finalized into a
    # failure, so this checks that dropping a half-read walk of a closed snapshot is silent.
    fill(storage, {f"k{i}": i for i in range(10)})
    snap = storage.snapshot()
    chunks = snap.chunks(3)
    assert len(next(chunks)) == 6
    snap.close()
    del chunks
    gc.collect()


# -- history and discarded records ---------------------------------------------------------


HISTORY = (("aa11", 1), ("bb22", 7))


def test_history_starts_empty_and_is_replaced(storage: Storage) -> None:
    assert storage.history == ()
    storage.set_history(HISTORY)
    assert storage.history == HISTORY
    storage.set_history([["cc33", 3]])  # type: ignore[list-item]  # lists are accepted too
    assert storage.history == (("cc33", 3),)


@pytest.mark.parametrize(
    ("history", "error"),
    [
        ((("a", 5), ("b", 3)), ValueError),  # first txids go back
        ((("a", -1),), ValueError),
        ((("a", 2**63),), ValueError),  # beyond what SQLite can store
        ((("a", "1"),), TypeError),
        (((1, 1),), TypeError),
        ((("a",),), TypeError),
        ("a1", TypeError),
    ],
)
def test_bad_history_is_refused_and_changes_nothing(
    storage: Storage, history: Any, error: type[Exception]
) -> None:
    storage.set_history(HISTORY)
    with pytest.raises(error):
        storage.set_history(history)
    assert storage.history == HISTORY


def test_counters_beyond_the_storable_range_are_refused(storage: Storage) -> None:
    # 2**63 would overflow SQLite's integers: every backend refuses it alike, cleanly.
    with pytest.raises(ValueError, match="must be in"):
        storage.set_generation(2**63)
    with pytest.raises(ValueError, match="must be in"):
        storage.set_generation(2**64 - 1)
    storage.set_generation(2**63 - 1)
    assert storage.generation == 2**63 - 1


def test_a_load_replaces_the_history_and_keeps_its_discarded_record(storage: Storage) -> None:
    storage.apply([[1, 1, [put("x", "mine")]]])
    storage.set_history((("mine", 1),))
    record = {"master": "m", "first_txid": 1, "last_txid": 1, "replaced": [["x", "mine"]]}
    loader = storage.begin_load()
    loader.add(["x", "theirs"])
    loader.commit(4, 2, 2, HISTORY, record)
    assert storage.history == HISTORY
    assert storage.discarded() == [record]
    assert contents(storage) == {"x": "theirs"}


def test_an_aborted_load_keeps_history_and_no_record(storage: Storage) -> None:
    storage.set_history(HISTORY)
    loader = storage.begin_load()
    loader.abort()
    with pytest.raises(ValueError, match="must not go back"):
        storage.begin_load().commit(1, 0, 0, (("b", 3), ("a", 1)), {"x": 1})
    assert storage.history == HISTORY
    assert storage.discarded() == []


def test_history_can_not_change_during_a_load(storage: Storage) -> None:
    loader = storage.begin_load()
    with pytest.raises(RuntimeError):
        storage.set_history(HISTORY)
    loader.abort()
