"""Adaptive chunk sizes: how many tasks travel to a worker together.

Runs in the parent, in the scheduler thread. Imports nothing of corepool.

Too small a chunk and the pool spends its time on messages; too large and
one worker is left with a long tail while the others idle. The chunker
starts with one task per chunk, learns the time per task from the timings
that come back, aims each chunk at ``target_s``, and near the end of a sized
input splits what is left so that every worker finishes at about the same
time.

An explicit chunk size is the unit of work sent, as the caller asked; but
when its tasks turn out to take microseconds, so that a chunk of that size
would cost more in messages than in work (under ``MIN_CHUNK_SECONDS``),
several such chunks travel in one message, as many as the automatic size
would hold, rounded to whole chunks of the caller's size.
"""

from __future__ import annotations

import math

__all__ = ["MIN_CHUNK_SECONDS", "TARGET_CHUNK_SECONDS", "Chunker"]

TARGET_CHUNK_SECONDS = 0.02
# Near the end, chunks shrink, but not below this much work: a round trip to
# a worker costs a few hundred microseconds.
MIN_CHUNK_SECONDS = 0.002
# A stride of tasks sharing one status write lasts about this long (see
# _worker._call_in_strides): tasks of 10 us and more are tracked one by one.
STRIDE_SECONDS = 20e-6
MAX_STRIDE = 256
# One fast task says little about the next thousand: let the size grow by at
# most this factor per measured chunk, so a noisy first timing cannot produce
# one giant chunk.
_GROWTH = 8


class Chunker:
    """Chooses the size of each chunk of one job."""

    def __init__(
        self,
        *,
        workers: int,
        total: int | None,
        chunksize: int | None,
        target_s: float = TARGET_CHUNK_SECONDS,
    ) -> None:
        self.workers = workers
        self.total = total
        self.chunksize = chunksize
        self.target_s = target_s
        self._cap = 1
        self._tasks_timed = 0
        self._seconds_timed = 0.0

    @property
    def seconds_per_task(self) -> float | None:
        """The mean worker-side time per task so far, or ``None`` before any timing."""
        if self._tasks_timed == 0:
            return None
        return self._seconds_timed / self._tasks_timed

    def observe(self, tasks: int, seconds: float) -> None:
        """Learn from a finished chunk: ``tasks`` took ``seconds`` in a worker."""
        if tasks <= 0:
            return
        self._tasks_timed += tasks
        self._seconds_timed += max(seconds, 0.0)
        self._cap = max(self._cap, tasks) * _GROWTH

    def next_size(self, pulled: int) -> int:
        """How many tasks the next chunk should take, ``pulled`` having been taken already."""
        explicit = self.chunksize
        per_task = self.seconds_per_task
        if explicit is not None:
            if per_task is None or explicit * per_task >= MIN_CHUNK_SECONDS:
                return explicit
            # Tiny tasks: whole chunks of the caller's size, several per message.
            return max(explicit, self._automatic_size(pulled, per_task) // explicit * explicit)
        return self._automatic_size(pulled, per_task)

    def _automatic_size(self, pulled: int, per_task: float | None) -> int:
        if per_task is None:
            size = 1
        elif per_task <= 0.0:
            size = self._cap
        else:
            size = min(self._cap, max(1, int(self.target_s / per_task)))
        if self.total is not None:
            # Near the end, split the rest evenly: each worker holds at most
            # two chunks (one running, one queued), so a chunk of
            # remaining / (2 * workers) leaves no long tail.
            remaining = self.total - pulled
            share = math.ceil(remaining / (2 * self.workers))
            floor = 1 if per_task is None or per_task <= 0 else int(MIN_CHUNK_SECONDS / per_task)
            size = min(size, max(1, share, floor))
        return size

    def stride(self) -> int:
        """How many tasks may share one status write: 1 unless tasks take under 10 µs."""
        per_task = self.seconds_per_task
        if per_task is None:
            return 1
        if per_task <= 0.0:
            return MAX_STRIDE
        return max(1, min(MAX_STRIDE, int(STRIDE_SECONDS / per_task)))
