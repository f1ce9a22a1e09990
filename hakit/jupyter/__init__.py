"""hakit in a notebook: trio in guest mode on the kernel's asyncio loop (DESIGN 6.2).

A learner never writes trio plumbing::

    import hakit.jupyter as hj
    cluster = hj.open_cluster(seed=1)      # re-running the cell replaces the old cluster
    alpha = cluster.add_node("alpha")      # running when it returns, at mem:alpha
    cluster.make_master("alpha")
    b = cluster.attach("beta", "alpha")    # a Handle at once; the attach runs in background
    await cluster.wait_synced("beta")      # the kernel stays responsive meanwhile
    hj.close()                             # ends the run (also at kernel shutdown)

The same code runs in a plain script inside ``asyncio.run(...)``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ._bridge import install_in_ipython as _install_in_ipython
from ._errors import NotebookError
from ._guest import close_runtime as _close_runtime
from ._guest import runtime as _runtime
from ._handle import Handle
from ._live import LiveCluster, LogEntry, NodeRow, close_clusters, open_cluster

T = TypeVar("T")

__all__ = [
    "Handle",
    "LiveCluster",
    "LogEntry",
    "NodeRow",
    "NotebookError",
    "close",
    "open_cluster",
    "replay",
    "run",
    "start_soon",
]


def start_soon(fn: Callable[..., Awaitable[T]], *args: Any) -> Handle[T]:
    """Run the trio function ``fn(*args)`` in the background; return its `Handle`.

    A failure is kept in the handle (``h.exception()``) and never ends the run.
    """
    name = getattr(fn, "__name__", "task")
    return Handle(_runtime(), name, fn, *args)


async def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run the trio function ``fn(*args)`` to completion from a cell: ``await hj.run(f, x)``.

    Interrupting the cell cancels this call only; the run and the cluster go on.
    """
    import asyncio

    handle = start_soon(fn, *args)
    try:
        return await handle
    except asyncio.CancelledError:
        handle.cancel()
        raise


def replay(path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Review a saved run: the `hakit.widgets.Timeline` of the log at `path`.

    ``cluster.events.save(path)`` (or a live cluster's ``cluster.cluster.events``) writes
    such a log; the timeline has a scrubber showing every node's role and txid at any point,
    and exports to SVG and HTML (``.save_svg(path)``, ``.save_html(path)``). Keyword
    arguments go to `hakit.widgets.Timeline` (``hidden=``, ``window=``...).

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not a hakit event log.
    """
    from ..widgets import Timeline  # the widgets extra is needed only to look

    return Timeline.from_file(path, **kwargs)


def close() -> None:
    """Close every live cluster and end the trio run cleanly (also done at kernel exit)."""
    close_clusters()
    _close_runtime()


_install_in_ipython()
