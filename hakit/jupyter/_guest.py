"""One trio run in guest mode on the host's asyncio loop (the kernel's, in Jupyter).

trio's guest mode runs every trio task step as a callback of the host loop, on the host's
thread, and waits for I/O in a worker thread (`trio.lowlevel.start_guest_run`). This module
keeps exactly one such run per process (a second `start_guest_run` on the same thread fails),
started by the first call that needs it and ended by `close` (or at interpreter exit).

The host callbacks trio asks for go through a small queue of our own instead of straight to
``loop.call_soon``. The loop still runs them in order, but the queue also lets the host *drive*
the run for a moment (`Runtime.drive_until`): a cell that adds a node gets it back started and
listening, a closing kernel finishes the run cleanly even after its loop stopped (no "guest
run got abandoned" warning), and nothing depends on how the kernel interleaves messages with
trio's ticks.
"""

from __future__ import annotations

import asyncio
import atexit
import signal
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import contextmanager, suppress
from typing import Any

import outcome
import trio
import trio.lowlevel
import trio.testing

from ._errors import NotebookError

#: How long `close` and interpreter exit drive a cancelled run before giving up on it.
CLOSE_TIMEOUT = 5.0
#: How long trio may run batch after batch before the host loop gets a moment of idle time,
#: and how long that moment is (seconds; see `Runtime._soon`).
HOST_SLICE = 0.01
HOST_IDLE = 0.0005
#: The clock those are measured on (a test may replace it).
_host_time = time.perf_counter


class Runtime:
    """The process's guest run: its host loop, root nursery and state.

    Use `runtime()` to get (or start) it; everything else goes through the live cluster and
    `hakit.jupyter`'s functions.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: trio.abc.Clock | None) -> None:
        self.loop = loop
        # A MockClock at rate 1 keeps real time, and can be paused, stepped, slowed down or
        # sped up while the run goes on (`LiveCluster.pause`, `step`, `speed`).
        self.clock: trio.abc.Clock = (
            clock if clock is not None else trio.testing.MockClock(rate=1.0)
        )
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._queue: deque[Callable[[], object]] = deque()
        self._scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._outcome: outcome.Outcome[None] | None = None
        self._done_waiters: list[asyncio.Future[None]] = []
        self._driving = False
        self._scheduled = 0  # `_run_one` calls on the loop
        self._slice_start: float | None = None  # when trio last started running nonstop
        self.closing = False
        with _no_trio_sigint():
            trio.lowlevel.start_guest_run(
                self._main,
                run_sync_soon_threadsafe=self._soon_threadsafe,
                run_sync_soon_not_threadsafe=self._soon,
                done_callback=self._finished,
                # asyncio owns the wakeup fd (signal handling): trio must leave it alone.
                host_uses_signal_set_wakeup_fd=True,
                clock=self.clock,
            )
        self.token = trio.lowlevel.current_trio_token()
        if not self.drive_until(lambda: self._nursery is not None, timeout=CLOSE_TIMEOUT):
            raise NotebookError("the trio run did not start")  # pragma: no cover

    # -- host callbacks ---------------------------------------------------------------------
    # Each queued callback has one `_run_one` on the loop, which runs one callback: so trio
    # gets one batch of tasks per turn of the host loop, and the kernel's own callbacks take
    # their turns in between. `_scheduled` counts the `_run_one`s on the loop; those left
    # over once drive_until has run the queue itself do nothing (were they to run the next
    # callbacks, a busy run would take several batches per turn, and the kernel would wait).
    def _soon(self, fn: Callable[[], object]) -> None:
        with self._lock:
            self._queue.append(fn)
            if self._driving or self.loop.is_closed():
                return
            self._scheduled += 1
        # A run whose tasks never block never lets the host loop wait, so the kernel's main
        # thread holds the GIL nonstop: the kernel's other threads (shell channel, iopub) then
        # wait for it at every step of a message's way, and a trivial cell took 200 ms (p99)
        # while a cluster committed at full speed. A short idle moment after each slice of
        # nonstop running (the loop waits in select, without the GIL) lets them through:
        # 33 ms, for about 5% of the commit rate (bench step `notebook`).
        now = _host_time()
        if self._slice_start is None:
            self._slice_start = now
        if now - self._slice_start >= HOST_SLICE:
            self._slice_start = None
            self.loop.call_later(HOST_IDLE, self._run_one)
        else:
            self.loop.call_soon(self._run_one)

    def _soon_threadsafe(self, fn: Callable[[], object]) -> None:
        self._slice_start = None  # trio waited for I/O or a timer: it was not running nonstop
        with self._lock:
            self._queue.append(fn)
            self._scheduled += 1
            self._ready.notify_all()
        try:
            self.loop.call_soon_threadsafe(self._run_one)
        except RuntimeError:  # a closed loop (interpreter exit): drive_until runs it
            with self._lock:
                self._scheduled -= 1

    def _run_one(self) -> None:
        with self._lock:
            surplus = self._scheduled > len(self._queue)
            self._scheduled -= 1
            if surplus or self._driving:
                return  # its callback already ran (drive_until), or drive_until runs it
            fn = self._queue.popleft()
        fn()

    def drive_until(self, condition: Callable[[], bool], *, timeout: float) -> bool:
        """Run trio's pending host callbacks on this thread until `condition()` holds.

        Only for short, bounded waits (starting a node, closing): the callbacks are those the
        loop would run next anyway. Returns whether `condition` came true within `timeout`.

        Raises:
            NotebookError: called from inside a trio task (it would run trio re-entrantly).
        """
        if trio.lowlevel.in_trio_task():
            raise NotebookError(
                "this call is for notebook cells and plain asyncio code; inside trio code "
                "use the trio API (hakit.Cluster, node methods) with await"
            )
        if self._driving:
            raise NotebookError("drive_until is not re-entrant")  # pragma: no cover
        deadline = time.monotonic() + timeout
        self._driving = True
        try:
            while not condition():
                with self._lock:
                    while not self._queue:
                        if self._outcome is not None:
                            return condition()
                        left = deadline - time.monotonic()
                        if left <= 0:
                            return False
                        # trio waits for I/O in its worker thread; it hands the next tick
                        # over through _soon_threadsafe, which wakes us.
                        self._ready.wait(left)
                    fn = self._queue.popleft()
                fn()
            return True
        finally:
            with self._lock:
                self._driving = False
                # Whatever is left, the loop runs as usual: one `_run_one` per callback.
                missing = 0 if self.loop.is_closed() else len(self._queue) - self._scheduled
                self._scheduled += max(missing, 0)
            for _ in range(missing):
                self.loop.call_soon(self._run_one)

    # -- the run ----------------------------------------------------------------------------
    async def _main(self) -> None:
        with self._scope:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await trio.sleep_forever()

    def _finished(self, result: outcome.Outcome[None]) -> None:
        self._outcome = result
        self._nursery = None
        for waiter in self._done_waiters:
            if not waiter.done():
                with suppress(RuntimeError):  # its loop may be closed (interpreter exit)
                    waiter.set_result(None)
        self._done_waiters.clear()

    @property
    def running(self) -> bool:
        """Whether the run is up and not closing."""
        return self._outcome is None and not self.closing

    @property
    def finished(self) -> bool:
        """Whether the run has ended."""
        return self._outcome is not None

    @property
    def nursery(self) -> trio.Nursery:
        """The root nursery; tasks started in it never fail it (they are supervised)."""
        if self._nursery is None or self.closing:
            raise NotebookError("the hakit notebook runtime is closed: call hj.open_cluster()")
        return self._nursery

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start ``fn(*args)`` in the root nursery (it must not raise: supervise it)."""
        self.nursery.start_soon(fn, *args)

    def close(self, *, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Cancel the run and drive it to its end; return whether it ended in time."""
        if self._outcome is None and not self.closing:
            self.closing = True
            self._scope.cancel()
        if self._outcome is None and not trio.lowlevel.in_trio_task():
            self.drive_until(lambda: self._outcome is not None, timeout=timeout)
        return self._outcome is not None

    def wait_finished(self) -> asyncio.Future[None]:
        """An asyncio future that resolves once the run has ended."""
        future = self.loop.create_future()
        if self._outcome is not None:
            future.set_result(None)
        else:
            self._done_waiters.append(future)
        return future


@contextmanager
def _no_trio_sigint():  # type: ignore[no-untyped-def]
    """Keep trio from taking over SIGINT, so that Interrupt never cancels the whole run.

    trio installs its own SIGINT handler when the default one is in place as the run starts
    (ipykernel installs the default one while a cell runs). A look-alike handler here makes
    trio leave SIGINT to the host: Interrupt then stops only the cell that is running.
    """
    try:
        current = signal.getsignal(signal.SIGINT)
    except ValueError:  # pragma: no cover - not the main thread
        yield
        return
    if current is not signal.default_int_handler:
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGINT, interrupt)
    except ValueError:  # pragma: no cover - not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, current)


_runtime: Runtime | None = None
_clock: trio.abc.Clock | None = None


def host_loop() -> asyncio.AbstractEventLoop:
    """Return the running asyncio loop (the kernel's in Jupyter).

    Raises:
        NotebookError: no asyncio loop is running (a plain script must use ``asyncio.run``).
    """
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    # ipykernel runs sync cells inside its loop, but outside any task on some versions.
    with suppress(Exception):
        from IPython import get_ipython

        if get_ipython() is not None:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                loop = asyncio.get_event_loop()
            if loop.is_running():
                return loop
    raise NotebookError(
        "hakit.jupyter needs a running asyncio loop: in Jupyter it uses the kernel's; in a "
        "script call it from code run by asyncio.run(...), or use trio directly with "
        "'async with hakit.open_cluster() as cluster:'"
    )


def runtime() -> Runtime:
    """Return the process's guest run, starting it on the running asyncio loop if needed.

    Raises:
        NotebookError: no asyncio loop is running, or the run lives on another loop.
    """
    global _runtime
    if _runtime is not None and _runtime.running:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = _runtime.loop
        if loop is not _runtime.loop:
            if _runtime.loop.is_closed() or not _runtime.loop.is_running():
                _runtime.close()  # an old asyncio.run() ended without closing it
            else:
                raise NotebookError(
                    "the hakit notebook runtime runs on another asyncio loop; call hj.close() "
                    "there first"
                )
        else:
            return _runtime
    loop = host_loop()
    # A closing run must end before the next starts (one guest run per thread).
    if _runtime is not None and not _runtime.finished and not _runtime.close():
        raise NotebookError("the previous hakit run is still closing; try again")
    _runtime = Runtime(loop, _clock)
    return _runtime


def current_runtime() -> Runtime | None:
    """Return the guest run if one is up, without starting one."""
    return _runtime if _runtime is not None and _runtime.running else None


def set_clock(clock: trio.abc.Clock | None) -> None:
    """Use `clock` for the next run that starts (tests: a `trio.testing.MockClock`)."""
    global _clock
    _clock = clock


def close_runtime() -> bool:
    """End the run (cancel every task and wait, up to a few seconds); return whether it ended."""
    if _runtime is None:
        return True
    return _runtime.close()


@atexit.register
def _close_at_exit() -> None:
    # The kernel's loop has stopped by now: drive the cancelled run to its end ourselves, so
    # trio's state is finished properly (no "guest run got abandoned" warning).
    if _runtime is not None and not _runtime.finished:
        with suppress(Exception):
            _runtime.close()
