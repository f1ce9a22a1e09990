"""Let a single error out of a nursery as itself, not inside an `ExceptionGroup`.

trio wraps whatever leaves a nursery in a group, so an error raised in the body of
``async with open_node(...)`` would not match ``except NotMasterError`` around the block.
`open_node` and `open_cluster` own their nursery as a detail: a lone error (the user's, or
one internal failure) comes out unwrapped; several at once stay grouped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


def single_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """Return the one exception inside `group` (through nested groups of one), else None."""
    while len(group.exceptions) == 1:
        only = group.exceptions[0]
        if not isinstance(only, BaseExceptionGroup):
            return only
        group = only
    return None


@asynccontextmanager
async def open_unwrapping_nursery() -> AsyncIterator[trio.Nursery]:
    """A trio nursery whose lone error leaves it as itself."""
    single: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        single = single_error(group)
        if single is None:
            raise
    if single is not None:
        # Raised outside the except block, so the group does not become its __context__;
        # when it is the body's own exception, contextlib re-raises it with its traceback.
        raise single
