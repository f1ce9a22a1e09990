"""Execute the teaching notebooks in a real ipykernel and check the facts they claim.

A notebook claims facts in cells tagged ``check:<name>``: such a cell's value (its
``text/plain`` result) is a Python literal, and `EXPECTED` says what it must be. A notebook
passes when it runs top to bottom without an error, every tagged cell produced its value, and
every value is the expected one.

Used three ways:

* ``tests/notebooks/test_notebooks.py`` (in ``make test``);
* ``python -m tests.notebooks.run --render notebooks/rendered`` (``make notebooks``): execute,
  check, and write the executed copies that a static viewer shows;
* the Binder test runs this file with the Python of a venv built from ``binder/``.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
#: Seconds one cell may take (a notebook as a whole must stay under a minute).
CELL_TIMEOUT = 60

#: What each ``check:<name>`` cell must show, by notebook. These are the facts the notebook's
#: text tells the learner; the test fails when the cluster does something else.
EXPECTED: dict[str, dict[str, Any]] = {
    "01-quickstart": {
        "roles": {"alpha": "MASTER", "beta": "REPLICA", "gamma": "REPLICA"},
        "commit": {"txid": 1, "generation": 1, "acked": ["beta", "gamma"], "detached": ()},
        "reads": ("hello", "hello"),
        "refused": (
            "NotMasterError: node 'beta' is a replica and cannot accept writes "
            "(the master is at mem:alpha)"
        ),
        "force": (
            "BECOMES_MASTER",
            "Force master completed: this replica caught up, stepped the old master down, "
            "and is now the master.",
        ),
        "after-force": {
            "roles": {"alpha": "STANDALONE", "beta": "REPLICA", "gamma": "MASTER"},
            "generations": {"alpha": 2, "beta": 2, "gamma": 2},
            "beta still attached": True,
            "beta follows": "gamma",
        },
        "new-master-write": (2, ["beta"], "failover"),
        "message": b"echo from the master: hello",
        "load": {"alpha": ("standalone", 1), "beta": ("replica", 502), "gamma": ("master", 502)},
        "exercise": {
            "reason": "BECOMES_MASTER",
            "beta generation": 3,
            "gamma role": "STANDALONE",
            "gamma refuses writes": True,
            "acked": [],
        },
    },
    "02-attach-and-initial-sync": {
        "full-load": {
            "heard": ["CONNECTED", "DB_LOAD_BEGIN", "DB_LOAD_OK"],
            "sync": "full",
            "same data": True,
        },
        "equal": {
            "stopped with": "STOPPED_BY_LOCAL_REQUEST",
            "heard": ["CONNECTED", "DB_EQUAL"],
            "sync": "equal",
        },
        "incremental": {
            "heard": ["CONNECTED", "STATEFUL_SYNC"],
            "sync": "incremental",
            "txids": (6, 6),
        },
        "hot": {
            "committed while delta loaded": True,
            "delta's link": "syncing",
            "acked by": ["beta", "delta"],
            "delta has it": "hot",
        },
        "static": {
            "committed while delta loaded": False,
            "delta's link": "syncing",
            "acked by": ["beta", "delta"],
            "delta has it": "static",
        },
        "failed-load": {
            "stop reason": "CANCELLED",
            "heard": ["CONNECTED", "DB_LOAD_BEGIN", "DB_LOAD_FAILED", "REPLICA_STOPPED"],
            "gamma txid": 0,
            "gamma keys": 0,
        },
        "resynced": (True, True),
        "exercise": {
            "heard": ["CONNECTED", "DB_LOAD_BEGIN", "DB_LOAD_OK"],
            "sync": "full",
            "same data": True,
        },
    },
    "03-force-master-and-fencing": {
        "start": {"alpha": ("MASTER", 1, 1), "beta": ("REPLICA", 1, 1), "gamma": ("REPLICA", 1, 1)},
        "force": (
            "BECOMES_MASTER",
            {"alpha": ("STANDALONE", 2, 1), "beta": ("REPLICA", 2, 1), "gamma": ("MASTER", 2, 1)},
        ),
        "old-master-refuses": (
            "node 'alpha' stepped down and refuses writes (the master is at mem:gamma)"
        ),
        "partition": {
            "replicas stopped with": ("CONNECTION_ABORTED", "CONNECTION_ABORTED"),
            "alpha's write acked by": (),
            "detached": ("beta", "gamma"),
        },
        "split-brain": {
            "alpha": ("MASTER", 1, 2),
            "beta": ("REPLICA", 2, 2),
            "gamma": ("MASTER", 2, 2),
        },
        "fenced": (
            (
                "HANDSHAKE_FAILED",
                "master at mem:alpha refused the handshake: the replica has seen generation 2, "
                "newer than this master's 1, a node was promoted from this master's history: "
                "this master is stale",
            ),
            {
                "alpha": ("STANDALONE", 2, 2),
                "beta": ("STANDALONE", 2, 2),
                "gamma": ("MASTER", 2, 2),
            },
        ),
        "stale-refuses": "node 'alpha' stepped down and refuses writes",
        "rejoin": {
            "sync": ["full"],
            "alpha has lonely": None,
            "alpha has y": 2,
            "state": {
                "alpha": ("REPLICA", 2, 2),
                "beta": ("STANDALONE", 2, 2),
                "gamma": ("MASTER", 2, 2),
            },
        },
        "discarded": [
            {
                "master": "gamma",
                "txids": (2, 2),
                "replaced": (("lonely", "written on the wrong side"),),
            }
        ],
        "exercise": {
            "reason": "BECOMES_MASTER",
            "state": {
                "alpha": ("MASTER", 3, 3),
                "beta": ("REPLICA", 3, 3),
                "gamma": ("STANDALONE", 3, 2),
            },
            "acked": ["beta"],
            "gamma refuses writes": True,
        },
    },
    "04-message-channels": {
        "one-way": [("beta", "gamma", [b"cache", b"refresh"])],
        "request": b"alpha got 1 part(s)",
        "channel": b"beta got 3 part(s)",
        "multi": [b"k0", b"k1", b"k2"],
        "eid-master": (b"alpha is the master", b"gamma is the master"),
        "errors": {
            "no handler": "NoServerError",
            "no response": "NoResponseError",
            "multi-part": "BufferSmallError",
            "timeout": "ChannelTimeoutError",
            "handler raised": "RemoteHandlerError",
            "no master": "UnavailableError",
            "bad argument": "InvalidArgumentError",
        },
        "exercise": (b"first", ["InvalidArgumentError"]),
    },
    "05-faults-and-stop-reasons": {
        "reasons": [
            (0, "CONNECTION_ABORTED"),
            (1, "MASTER_REQUESTED_DISCONNECT"),
            (2, "HANDSHAKE_FAILED"),
            (3, "STOPPED_BY_LOCAL_REQUEST"),
            (4, "BECOMES_MASTER"),
            (5, "ITERATOR_ERROR"),
            (6, "CANCELLED"),
        ],
        "reason-0": ("CONNECTION_ABORTED", {"HELLO": 1, "WELCOME": 1}),
        "reason-1": ("MASTER_REQUESTED_DISCONNECT", {"DETACH": 1}),
        "reason-2": (
            "HANDSHAKE_FAILED",
            "master at mem:alpha refused the handshake: the master already serves its maximum "
            "number of replicas",
            {"REJECT": 1},
        ),
        "reason-3": ("STOPPED_BY_LOCAL_REQUEST", {"BYE": 1}),
        "reason-4": (
            "BECOMES_MASTER",
            {"PROMOTE_REQUEST": 1, "KILL_MASTER": 1, "MASTER_KILLED": 1},
            "MASTER",
        ),
        "reason-5": ("ITERATOR_ERROR", [1, 2, None], {"TXNS": 2}),
        "reason-6": ("CANCELLED", {"BYE": 0}),
        "log": [
            ("cut", 0, "CONNECTION_ABORTED"),
            ("detached", 1, "MASTER_REQUESTED_DISCONNECT"),
            ("refused", 2, "HANDSHAKE_FAILED"),
            ("holder", 3, "STOPPED_BY_LOCAL_REQUEST"),
            ("stopped", 3, "STOPPED_BY_LOCAL_REQUEST"),
            ("promoted", 3, "STOPPED_BY_LOCAL_REQUEST"),
            ("promoted", 4, "BECOMES_MASTER"),
            ("buggy", 5, "ITERATOR_ERROR"),
            ("cancelled", 6, "CANCELLED"),
        ],
        "exercise": ("CONNECTION_ABORTED", "the master closed the connection"),
    },
    "06-sync-vs-async-commit": {
        "policies": {
            "NONE": (0, (), "quick"),
            "ONE": (1, (), "quick"),
            "QUORUM": (2, (), "quick"),
            "ALL": (2, ("delta",), "waited 2 s"),
        },
        "quorum": (
            "only 2 replica(s) attached, the quorum is 3: the transaction was not committed",
            True,
        ),
        "sync-survives": {
            "commit acked by": ("beta",),
            "commit returned": "after the ack",
            "beta stopped with": "CONNECTION_ABORTED",
            "new master has it": 42,
        },
        "async-lost": {
            "commit acked by": (),
            "commit returned": "at once",
            "beta stopped with": "CONNECTION_ABORTED",
            "new master has it": None,
        },
        "exercise": 42,
    },
    "07-separate-processes": {
        "attached": [
            ("beta", "replica", "streaming", "running"),
            ("gamma", "replica", "streaming", "running"),
        ],
        "pids": {"separate processes": True, "alpha listens at": "mem:alpha"},
        "write": (1, ["beta", "gamma"]),
        "killed": {
            "beta": "killed (SIGKILL)",
            "exit status": -9,
            "alpha's replicas": ["gamma"],
            "acked": ["gamma"],
        },
        "restarted": {"beta sync": "incremental", "beta txid": 2, "master txid": 2},
        "paused": {"acked": ("beta",), "detached": ("gamma",), "gamma now": "streaming"},
        "get": ["42"],
        "status": ["node gamma", "role replica", "master alpha"],
        "process-master": {
            "acked by": ["delta"],
            "delta has": "a process",
            "delta stopped with": "CONNECTION_ABORTED",
        },
        "exercise": "full",
        "closed": [False],
    },
}


def value_of(cell: Any) -> Any:
    """Return the value a cell showed (its ``text/plain`` result, read as a literal)."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "execute_result":
            text = output["data"].get("text/plain", "")
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return text  # a repr that is not a literal is compared as text
    return _MISSING


_MISSING = object()


async def _execute(path: Path) -> tuple[Any, float]:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
    )  # fmt: skip
    started = time.monotonic()
    await client.async_execute()
    return nb, time.monotonic() - started


def execute(path: Path) -> tuple[Any, float]:
    """Run the notebook at `path` top to bottom in a fresh kernel; return it and the seconds."""
    return execute_all([path], workers=1)[path]


def execute_all(paths: list[Path], workers: int = 4) -> dict[Path, tuple[Any, float]]:
    """Run notebooks `workers` at a time, each in its own kernel (they mostly wait on timeouts).

    One asyncio loop drives every kernel (nbclient is asynchronous), so no threads are needed.
    """

    async def main() -> list[tuple[Any, float]]:
        slots = asyncio.Semaphore(workers)

        async def one(path: Path) -> tuple[Any, float]:
            async with slots:
                return await _execute(path)

        return list(await asyncio.gather(*(one(path) for path in paths)))

    return dict(zip(paths, asyncio.run(main()), strict=True))


def problems(name: str, nb: Any) -> list[str]:
    """Return what is wrong with the executed notebook `name` (nothing: it passed)."""
    found: list[str] = []
    seen: dict[str, Any] = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                found.append(
                    f"cell {index} raised {output['ename']}: {output['evalue']}\n{cell.source}"
                )
        for tag in cell.metadata.get("tags", []):
            if tag.startswith("check:"):
                seen[tag.removeprefix("check:")] = value_of(cell)
    expected = EXPECTED.get(name, {})
    for check, want in expected.items():
        got = seen.get(check, _MISSING)
        if got is _MISSING:
            found.append(f"check {check!r}: the cell is missing or showed no value")
        elif got != want:
            found.append(f"check {check!r}: expected {want!r}, got {got!r}")
    for check in seen.keys() - expected.keys():
        found.append(f"check {check!r} has no expected value in EXPECTED")
    return found


def notebook_paths() -> list[Path]:
    """The teaching notebooks, in order."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    """Execute and check notebooks; optionally write the executed copies."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/NN-*.ipynb")
    parser.add_argument("--render", type=Path, help="write executed copies into this folder")
    parser.add_argument("--workers", type=int, default=1, help="notebooks run at once")
    args = parser.parse_args(argv)
    failed = 0
    paths = args.notebooks or notebook_paths()
    for path, (nb, seconds) in execute_all(paths, args.workers).items():
        wrong = problems(path.stem, nb)
        status = "ok" if not wrong else "FAILED"
        print(f"{path.name}: {status} in {seconds:.1f} s", flush=True)
        for problem in wrong:
            print("   ", problem.replace("\n", "\n    "))
        failed += bool(wrong)
        if args.render is not None and not wrong:
            args.render.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, args.render / path.name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
