"""asyncio on the native Pool: what ``amap``, ``aimap``, ``aimap_unordered`` and ``arun`` await.

Runs in the parent, in the event loop's thread. Imports ``_results``, ``_calls``,
``_jobs`` and ``options``; ``pool`` hands it the calls to start.

No thread waits on the loop's behalf. The scheduler thread, which delivers
every result, wakes the loop with ``loop.call_soon_threadsafe`` (once per
turn of the loop, however many deliveries come); the loop then unpickles and
orders them with the ``ResultStream`` that ``imap`` uses, which never blocks
here. A ``submit``'s future wakes the loop the same way. Cancelling the task
that awaits (or closing ``aimap``'s generator early) stops the work: tasks not
started are dropped, and the workers running the call's tasks are killed and
replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from concurrent.futures import Future
from functools import partial
from typing import Any, Protocol

from corepool._calls import TaskFuture
from corepool._jobs import Window
from corepool._results import ResultStream, in_order
from corepool.options import MapOptions

__all__ = ["StartStream", "collect", "iterate", "run"]

Run = tuple[int, list[Any]]


class StartStream(Protocol):
    """``Pool._stream``: start a call's job; its stream tells ``on_delivery`` of each delivery."""

    def __call__(
        self,
        call: str,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        options: MapOptions,
        *,
        window: Window | None,
        on_delivery: Callable[[], None],
    ) -> ResultStream: ...


async def collect(
    start: StartStream,
    call: str,
    fn: Callable[..., Any],
    iterables: tuple[Iterable[Any], ...],
    options: MapOptions,
) -> list[Any]:
    """``amap``: every result, as ``map`` returns them; it raises what ``map`` raises."""
    consumer = _Consumer(start, call, fn, iterables, options, window=None)
    arrived: list[Run] = []
    try:
        runs = consumer.stream.arrivals()
        while (run := await consumer.next_run(runs)) is not None:
            arrived.append(run)
    finally:
        consumer.stop()
    if options.ordered:
        return in_order(arrived)
    return [value for _, values in arrived for value in values]


async def iterate(
    start: StartStream,
    call: str,
    fn: Callable[..., Any],
    iterables: tuple[Iterable[Any], ...],
    options: MapOptions,
    window: Window,
) -> AsyncGenerator[Any, None]:
    """``aimap`` (``options.ordered``) and ``aimap_unordered``: results one by one.

    The call starts at the first ``__anext__``. Leaving before the end
    (``aclose()``, cancellation, the generator dropped) stops it.
    """
    consumer = _Consumer(start, call, fn, iterables, options, window=window)
    try:
        stream = consumer.stream
        runs = ((0, run) for run in stream.ordered()) if options.ordered else stream.arrivals()
        while (run := await consumer.next_run(runs)) is not None:
            for value in run[1]:
                yield value
    finally:
        consumer.stop()


async def run(future: TaskFuture) -> Any:
    """``arun``: the result of a submitted call; cancelling the awaiting task stops the call."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    future.add_done_callback(partial(_hand_over, loop, done))
    try:
        await done
    except BaseException:
        # Cancelled (or the coroutine closed): nobody will take the result, so
        # end the call, even running (its worker is killed and replaced).
        future.stop()
        raise
    return future.result()


def _hand_over(loop: asyncio.AbstractEventLoop, done: asyncio.Future[None], _: Future[Any]) -> None:
    """A submitted call is done (in the scheduler thread): wake the task awaiting it."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits any more
        loop.call_soon_threadsafe(_release, done)


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # a cancelled waiter stays cancelled
        waiter.set_result(None)


class _Consumer:
    """One call's results as the event loop takes them: waits without blocking the loop."""

    def __init__(
        self,
        start: StartStream,
        call: str,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        options: MapOptions,
        *,
        window: Window | None,
    ) -> None:
        for iterable in iterables:
            if hasattr(iterable, "__aiter__") and not hasattr(iterable, "__iter__"):
                raise TypeError(
                    f"{call}() takes plain iterables, got an async iterable "
                    f"({type(iterable).__name__}): the pool's scheduler thread reads the "
                    "input, and only the event loop can read an async iterable. Collect it "
                    f"first ([x async for x in source]), or call {call}() on batches of it."
                )
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        # A wake-up is on its way to the loop: further deliveries need not send one.
        self._wake_pending = False
        self.stream = start(call, fn, iterables, options, window=window, on_delivery=self._notify)

    async def next_run(self, runs: Iterator[Run]) -> Run | None:
        """The next run with results in it, or ``None`` at the end; raises what the call raises."""
        for run in runs:
            if run[1]:
                return run
            await self._delivered()  # an empty run: nothing has come yet
        return None

    def stop(self) -> None:
        """The consumer is gone: drop the tasks not started, stop the running ones.

        Nothing happens once the call is over (ended, raised or timed out).
        """
        self.stream.stop()

    # -- the scheduler thread ------------------------------------------------------

    def _notify(self) -> None:
        """A delivery has come: wake the loop, unless a wake-up is on its way already."""
        if self._wake_pending:
            return
        self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._wake)

    # -- the loop's thread ---------------------------------------------------------

    def _wake(self) -> None:
        # Lowered before the waiter is released: a delivery from now on sends
        # a wake-up of its own, so none is missed.
        self._wake_pending = False
        if self._waiter is not None:
            _release(self._waiter)

    async def _delivered(self) -> None:
        """Wait for the next delivery, or for the call's timeout (the stream then raises it)."""
        waiter = self._waiter = self._loop.create_future()
        deadline = self.stream.deadline
        timer = None
        if deadline is not None:
            delay = max(0.0, deadline - time.monotonic())
            timer = self._loop.call_later(delay, _release, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
