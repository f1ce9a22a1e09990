"""`Handle`: a task running in the background of the notebook's trio run."""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, TypeVar

import trio
import trio.lowlevel

from ..protocol import StopReason
from ._errors import NotebookError
from ._guest import Runtime

T = TypeVar("T")

_ids = itertools.count(1)


def describe_value(value: object) -> str:
    """Return a plain-words account of a task's result (stop reasons are explained)."""
    if isinstance(value, StopReason):
        return f"{value.name} ({int(value)}): {value.describe()}"
    if value is None:
        return "done"
    return repr(value)


def describe_error(error: BaseException) -> str:
    """Return ``"Name: message"``, with the stop reason of replication errors."""
    if isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        return describe_error(error.exceptions[0])
    text = f"{type(error).__name__}: {error}"
    reason = getattr(error, "stop_reason", None)
    if isinstance(reason, StopReason):
        text += f" [{reason.name} ({int(reason)}): {reason.describe()}]"
    return text


class Handle(Generic[T]):
    """A task started in the background from a cell, a twin or a click.

    Await it in a cell (``result = await h``) or in trio code; or look at it: `done`,
    `result()`, `exception()`, `cancel()`. Its display shows what it does, its state and,
    once finished, its result or error (stop reasons with their explanation). A failing task
    fails only its handle: the run and every other task go on.

    Attributes:
        what: what the task does, in words (``"attach beta to alpha"``).
        id: a small number naming it in the dashboard's log.
    """

    def __init__(
        self,
        runtime: Runtime,
        what: str,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        nursery: trio.Nursery | None = None,
        on_done: Callable[[Handle[Any]], None] | None = None,
        status: Callable[[], str] | None = None,
    ) -> None:
        self.what = what
        self.id = next(_ids)
        self._runtime = runtime
        self._scope = trio.CancelScope()
        self._finished = trio.Event()
        self._state = "running"
        self._value: T | None = None
        self._error: BaseException | None = None
        self._on_done = on_done
        self._status = status
        self._futures: list[asyncio.Future[None]] = []
        self._callbacks: list[Callable[[Handle[T]], None]] = []
        (nursery or runtime.nursery).start_soon(self._run, fn, args)

    async def _run(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> None:
        try:
            with self._scope:
                value = await fn(*args)
                self._value = value
                self._state = "done"
            if self._state == "running":
                self._state = "cancelled"
        except trio.Cancelled:
            self._state = "cancelled"  # the run is closing
            raise
        except Exception as exc:  # a failing task is reported, never propagated
            self._error = exc
            self._state = "failed"
        finally:
            self._finish()

    def _finish(self) -> None:
        self._finished.set()
        for future in self._futures:
            if not future.done():
                future.set_result(None)
        self._futures.clear()
        callbacks, self._callbacks = self._callbacks, []
        if self._on_done is not None:
            callbacks.insert(0, self._on_done)
        for callback in callbacks:
            with contextlib.suppress(Exception):  # a view's callback must not break the task
                callback(self)

    # -- state ------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``"running"``, ``"done"``, ``"failed"`` or ``"cancelled"``."""
        return self._state

    @property
    def done(self) -> bool:
        """Whether the task has finished (done, failed or cancelled)."""
        return self._state != "running"

    def result(self) -> T:
        """Return the task's result, or raise its error.

        Raises:
            NotebookError: the task is still running (``await h`` waits for it) or was
                cancelled.
        """
        if self._state == "running":
            raise NotebookError(f"{self.what} is still running: use 'await h' to wait for it")
        if self._state == "cancelled":
            raise NotebookError(f"{self.what} was cancelled")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def exception(self) -> BaseException | None:
        """Return the task's error, or None if it succeeded.

        Raises:
            NotebookError: the task is still running.
        """
        if self._state == "running":
            raise NotebookError(f"{self.what} is still running: use 'await h' to wait for it")
        if self._state == "cancelled":
            return NotebookError(f"{self.what} was cancelled")
        return self._error

    def cancel(self) -> None:
        """Cancel the task (a no-op once it has finished)."""
        self._scope.cancel()

    def add_done_callback(self, callback: Callable[[Handle[T]], None]) -> None:
        """Call ``callback(handle)`` when the task finishes (at once if it has)."""
        if self.done:
            callback(self)
        else:
            self._callbacks.append(callback)

    def summary(self) -> str:
        """One line: what, state, and the result, error or live status."""
        if self._state == "running":
            live = self._status() if self._status is not None else ""
            return f"{self.what}: running" + (f" ({live})" if live else "")
        if self._state == "failed":
            assert self._error is not None
            return f"{self.what}: failed: {describe_error(self._error)}"
        if self._state == "cancelled":
            return f"{self.what}: cancelled"
        return f"{self.what}: {describe_value(self._value)}"

    # -- waiting ----------------------------------------------------------------------------
    async def wait(self) -> T:
        """Wait for the task in trio code and return its result (or raise its error)."""
        await self._finished.wait()
        return self.result()

    def __await__(self) -> Generator[Any, None, T]:
        if trio.lowlevel.in_trio_task():
            return self.wait().__await__()
        return self._wait_asyncio().__await__()

    async def _wait_asyncio(self) -> T:
        if not self.done:
            future = self._runtime.loop.create_future()
            self._futures.append(future)
            await future
        return self.result()

    # -- display ----------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<Handle #{self.id} {self.summary()}>"

    def _repr_html_(self) -> str:
        colour = {
            "running": "#1f6feb",
            "done": "#1a7f37",
            "failed": "#cf222e",
            "cancelled": "#9a6700",
        }[self._state]
        body = html.escape(self.summary().partition(": ")[2])
        return (
            f'<div class="hakit-handle"><b>{html.escape(self.what)}</b> '
            f'<span style="color:{colour};font-weight:600">{self._state}</span>'
            f"<div>{body}</div></div>"
        )
