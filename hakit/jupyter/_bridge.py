"""Awaiting hakit's (and trio's) own coroutines from a notebook cell.

A cell's top-level ``await`` runs on the kernel's asyncio loop, where a trio coroutine cannot
run. When hakit.jupyter is imported in IPython it adds an AST transformer that wraps each
top-level ``await X`` of a cell in ``bridge(X)`` and each ``async with X`` in
``bridge_cm(X)``: a coroutine of hakit or trio then runs as a task in the guest run, and the
cell awaits its result; anything else (asyncio code, a `Handle`) is awaited unchanged. Code
inside an ``async def`` of the cell is never rewritten: it is trio code run by `hj.run`.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import sys
import types
from typing import Any

from ._errors import NotebookError
from ._guest import runtime
from ._handle import Handle

_TRIO_MODULES = ("hakit", "trio")


def _module_of_coroutine(obj: object) -> str:
    frame = getattr(obj, "cr_frame", None) or getattr(obj, "ag_frame", None)
    if frame is None:
        return ""
    return str(frame.f_globals.get("__name__", ""))


def _is_ours(module: str) -> bool:
    return any(module == top or module.startswith(top + ".") for top in _TRIO_MODULES)


async def _in_trio(coroutine: Any, what: str) -> Any:
    async def run() -> Any:
        return await coroutine

    handle: Handle[Any] = Handle(runtime(), what, run)
    try:
        return await handle
    except asyncio.CancelledError:
        handle.cancel()  # an interrupted cell cancels its own call, never the run
        raise


def bridge(awaitable: Any) -> Any:
    """Return what a cell should await for `awaitable` (a trio task for hakit's coroutines)."""
    if isinstance(awaitable, types.CoroutineType) and _is_ours(_module_of_coroutine(awaitable)):
        return _in_trio(awaitable, awaitable.__qualname__)
    return awaitable


_REFUSED_CMS = {
    "hakit._runtime._cluster.open_cluster": (
        "'async with hakit.open_cluster()' cannot run in a notebook cell: its nodes would stop "
        "when the cell ends. Use 'cluster = hakit.jupyter.open_cluster()' instead"
    ),
    "hakit._runtime._node.open_node": (
        "'async with hakit.open_node()' cannot run in a notebook cell: the node would stop "
        "when the cell ends. Use 'cluster.add_node(name)' on a hakit.jupyter cluster, or put "
        "the code in an async def and run it with 'await hakit.jupyter.run(fn)'"
    ),
}


class _BridgedContext:
    """An async context manager of hakit or trio, entered and exited in the guest run."""

    def __init__(self, manager: Any) -> None:
        self._manager = manager

    async def __aenter__(self) -> Any:
        return await _in_trio(self._manager.__aenter__(), "async with: enter")

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await _in_trio(self._manager.__aexit__(*exc_info), "async with: exit")


def bridge_cm(manager: Any) -> Any:
    """Return what a cell's ``async with`` should use for `manager`.

    Raises:
        NotebookError: the manager cannot work in a cell (it must span one trio task:
            ``hakit.open_cluster``, ``hakit.open_node``, nurseries, cancel scopes).
    """
    if isinstance(manager, contextlib._AsyncGeneratorContextManager):
        gen: Any = manager.gen
        module = _module_of_coroutine(gen)
        qualname = f"{module}.{gen.__qualname__}"
        if qualname in _REFUSED_CMS:
            raise NotebookError(_REFUSED_CMS[qualname])
        if _is_ours(module):
            raise NotebookError(
                f"'async with {gen.__qualname__}()' must stay inside one trio task: put it in "
                "an async def and run that with 'await hakit.jupyter.run(fn)'"
            )
        return manager
    module = type(manager).__module__
    if _is_ours(module):
        if module.startswith("trio"):
            raise NotebookError(
                f"'async with' a {type(manager).__name__} must stay inside one trio task: put "
                "it in an async def and run that with 'await hakit.jupyter.run(fn)'"
            )
        return _BridgedContext(manager)
    return manager


_BRIDGE = "__import__('hakit.jupyter._bridge', fromlist=['bridge'])"


class BridgeTransformer(ast.NodeTransformer):
    """Wrap a cell's top-level ``await`` and ``async with`` (see the module docstring)."""

    def _call(self, name: str, value: ast.expr) -> ast.expr:
        func = ast.Attribute(value=ast.parse(_BRIDGE, mode="eval").body, attr=name, ctx=ast.Load())
        return ast.copy_location(ast.Call(func=func, args=[value], keywords=[]), value)

    def visit_Await(self, node: ast.Await) -> ast.AST:
        self.generic_visit(node)
        node.value = self._call("bridge", node.value)
        return node

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.AST:
        self.generic_visit(node)
        for item in node.items:
            item.context_expr = self._call("bridge_cm", item.context_expr)
        return node

    # Code inside definitions is trio code (run by hj.run): leave it as written.
    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return node

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        return node

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        return node


#: What trio (or asyncio) says when a trio coroutine is awaited outside the trio run.
_OUTSIDE_TRIO = (
    "must be called from async context",
    "unrecognized yield message",
    "Task got bad yield",
)


def _ran_hakit_code(tb: types.TracebackType | None) -> bool:
    while tb is not None:
        if _is_ours(str(tb.tb_frame.f_globals.get("__name__", ""))):
            return True
        tb = tb.tb_next
    return False


def _explain(
    shell: Any, etype: type[BaseException], value: BaseException, tb: Any, tb_offset: Any = None
) -> None:
    """IPython's handler for errors of cells run before the bridge was in place."""
    if any(text in str(value) for text in _OUTSIDE_TRIO) and _ran_hakit_code(tb):
        error = NotebookError(
            "this cell awaited a hakit coroutine outside the trio run: it was read before "
            "hakit.jupyter was imported, so its awaits were not bridged. Run the cell again "
            "(the bridge is in place now), and keep 'import hakit.jupyter' in a cell of its own"
        )
        shell.showtraceback((NotebookError, error, None), tb_offset=tb_offset)
        return
    shell.showtraceback((etype, value, tb), tb_offset=tb_offset)


def install_in_ipython() -> bool:
    """Add the transformer to the running IPython shell, once; return whether one runs."""
    if "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    if shell is None:
        return False
    transformers = shell.ast_transformers
    if not any(isinstance(t, BridgeTransformer) for t in transformers):
        transformers.append(BridgeTransformer())
        # The cell that imports hakit.jupyter was transformed before the import: explain the
        # error its hakit awaits raise (unless the user has a custom handler of their own).
        if not shell.custom_exceptions:
            shell.set_custom_exc((RuntimeError, TypeError), _explain)
    return True
