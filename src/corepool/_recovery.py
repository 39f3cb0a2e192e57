"""What becomes of a chunk's tasks when its worker dies or some of them go round again.

Runs in the parent (the scheduler thread calls it). Pure functions, which
import only the records of ``_backends.base`` and ``_protocol``, so they are
tested on their own (tests/unit/test_scheduling.py).

A worker that dies was running one task of its head chunk, at the position
its status slot names, or none (it died between tasks, or while decoding).
The task at that position is blamed; the others are run again. Tasks run in
*strides* (several tiny tasks per status write) do not say which of them
was running: each task of the stride is run again alone, and the one at
fault names itself when it kills its worker again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from corepool._backends.base import ChunkFinished, ChunkResults, Values
from corepool._protocol import ErrorSite

__all__ = ["MAX_SILENT_LOSSES", "Recovery", "plan_recovery", "results_without", "undecodable"]

# A chunk lost this many times with no task running (the worker died while
# decoding it, say) is failed rather than sent out again.
MAX_SILENT_LOSSES = 3


class Recovery(NamedTuple):
    """The plan for a lost chunk.

    ``rerun`` holds groups of positions, each to run again as a chunk of its
    own, in this order (ahead of the job's new chunks); a group of one runs
    with stride 1. ``blamed`` holds the positions whose task is failed (or
    retried, if the job allows).
    """

    rerun: list[list[int]]
    blamed: list[int]


def plan_recovery(*, tasks: int, stride: int, position: int | None, silent_losses: int) -> Recovery:
    """Plan what to do with a chunk of ``tasks`` tasks whose worker died.

    Args:
        tasks: How many tasks the chunk holds.
        stride: Tasks per status write in that chunk (1: each task tracked).
        position: Where the worker was (a task, or a stride's first task), or
            ``None`` if it ran none of them.
        silent_losses: How many times this chunk was lost, this time
            included, with no task running.
    """
    everything = list(range(tasks))
    if position is None:
        if silent_losses < MAX_SILENT_LOSSES:
            return Recovery(rerun=[everything], blamed=[])
        return Recovery(rerun=[], blamed=everything)
    if stride > 1:
        suspects = range(position, min(position + stride, tasks))
        rest = [p for p in everything if p not in suspects]
        return Recovery(rerun=[[p] for p in suspects] + ([rest] if rest else []), blamed=[])
    rest = [p for p in everything if p != position]
    return Recovery(rerun=[rest] if rest else [], blamed=[position])


def results_without(
    indices: Sequence[int],
    payload: ChunkResults,
    errors: dict[int, BaseException],
    dropped: Sequence[int],
) -> tuple[list[int], Values, dict[int, BaseException]]:
    """The results of a chunk less the tasks at ``dropped`` (they will be tried again).

    Unpickles the results here: only done when a task is retried.
    """
    keep = [p for p in range(len(indices)) if p not in set(dropped)]
    values = payload.load()
    renumber = {old: new for new, old in enumerate(keep)}
    return (
        [indices[p] for p in keep],
        Values([values[p] for p in keep], payload.nbytes),
        {renumber[p]: error for p, error in errors.items() if p in renumber},
    )


def undecodable(event: ChunkFinished) -> bool:
    """Every task of the chunk failed to decode: one bad argument spoiled them all."""
    errors = event.errors
    return (
        errors is not None
        and len(errors) == len(event.chunk)
        and all(error.site is ErrorSite.ARGUMENTS for error in errors.values())
    )
