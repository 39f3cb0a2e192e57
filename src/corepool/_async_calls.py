"""``Pool``'s calls for asyncio: ``amap``, ``aimap``, ``aimap_unordered`` and ``arun``.

Runs in the parent, in the event loop's thread. A mixin of ``Pool``: the
methods build the call's options and hand the pool's own ways of starting a
call to ``_aio``, which is imported on first use (importing asyncio takes
about 13 ms, which a pool that never meets an event loop should not pay).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any, TypeVar, cast

from corepool._calls import TaskFuture
from corepool._jobs import Window
from corepool._results import ResultStream
from corepool.options import MapOptions

__all__ = ["AsyncCalls"]

R = TypeVar("R")


class AsyncCalls:
    """The ``a``-prefixed calls of ``Pool``, for code that runs in an event loop."""

    # What the pool provides (see Pool).
    _stream: Callable[..., ResultStream]
    _window: Callable[[MapOptions], Window]
    _submit: Callable[..., TaskFuture]

    async def amap(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        ordered: bool = True,
        progress: bool = False,
        return_exceptions: bool = False,
        timeout: float | None = None,
        task_timeout: float | None = None,
    ) -> list[R]:
        """``map`` for asyncio: ``await`` the list of results; the loop is never blocked.

        Options, results and errors are those of ``map``. Cancelling the
        awaiting task (``asyncio.timeout`` included) stops the call: tasks not
        started are dropped, and running ones are ended (their workers are
        killed and replaced).

        Example:
            >>> squares = await pool.amap(square, range(1000))
        """
        from corepool import _aio  # noqa: PLC0415

        options = MapOptions(
            chunksize=chunksize,
            ordered=ordered,
            progress=progress,
            return_exceptions=return_exceptions,
            timeout=timeout,
            task_timeout=task_timeout,
        )
        return await _aio.collect(self._stream, "amap", fn, iterables, options)

    def aimap(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        progress: bool = False,
        return_exceptions: bool = False,
        timeout: float | None = None,
        task_timeout: float | None = None,
        read_ahead_bytes: int | str | None = None,
    ) -> AsyncGenerator[R, None]:
        """``imap`` for asyncio: ``async for`` over the results, in input order.

        As lazy and bounded as ``imap``; the call starts with the first
        iteration. The inputs are plain iterables (an async iterable raises
        ``TypeError``: the scheduler thread reads the input). Leaving early
        (``break`` and ``aclose()``, an exception, cancellation of the
        consuming task) stops the call: tasks not started are dropped, and
        running ones are ended (their workers are killed and replaced).

        Example:
            >>> async with contextlib.aclosing(pool.aimap(fetch, urls)) as pages:
            ...     async for page in pages:
            ...         save(page)
        """
        from corepool import _aio  # noqa: PLC0415

        options = MapOptions(
            chunksize=chunksize,
            progress=progress,
            return_exceptions=return_exceptions,
            timeout=timeout,
            task_timeout=task_timeout,
            read_ahead_bytes=read_ahead_bytes,
        )
        return _aio.iterate(self._stream, "aimap", fn, iterables, options, self._window(options))

    def aimap_unordered(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        progress: bool = False,
        return_exceptions: bool = False,
        timeout: float | None = None,
        task_timeout: float | None = None,
        read_ahead_bytes: int | str | None = None,
    ) -> AsyncGenerator[R, None]:
        """Like ``aimap``, but each result comes as soon as it is ready, in any order."""
        from corepool import _aio  # noqa: PLC0415

        options = MapOptions(
            chunksize=chunksize,
            ordered=False,
            progress=progress,
            return_exceptions=return_exceptions,
            timeout=timeout,
            task_timeout=task_timeout,
            read_ahead_bytes=read_ahead_bytes,
        )
        window = self._window(options)
        return _aio.iterate(self._stream, "aimap_unordered", fn, iterables, options, window)

    async def arun(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """``submit`` for asyncio: ``await`` the result of ``fn(*args, **kwargs)``.

        Cancelling the awaiting task stops the call, even running: its worker
        is killed and replaced. So ``asyncio.timeout()`` around ``arun`` is a
        per-task time limit. No thread waits for the result.

        Example:
            >>> async with asyncio.timeout(30):
            ...     report = await pool.arun(analyse, day)
        """
        from corepool import _aio  # noqa: PLC0415

        future = self._submit(fn, args, kwargs, exits_are_errors=False)
        return cast(R, await _aio.run(future))
