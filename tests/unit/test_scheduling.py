"""The scheduler's pure parts: crash recovery plans, the read-ahead window, chunk sizes, inputs,
the keys of shared argument copies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from corepool._chunking import MIN_CHUNK_SECONDS, Chunker
from corepool._jobs import IteratorInput, SliceInput, Window, input_of
from corepool._recovery import MAX_SILENT_LOSSES, Recovery, plan_recovery
from corepool._sharing import SharingLedger


@pytest.mark.parametrize(
    ("tasks", "stride", "position", "losses", "plan"),
    [
        # The running task is blamed; its neighbours run again, as one chunk.
        (5, 1, 2, 1, Recovery(rerun=[[0, 1, 3, 4]], blamed=[2])),
        (1, 1, 0, 1, Recovery(rerun=[], blamed=[0])),
        # Died between tasks: the whole chunk again, until it looks deliberate.
        (3, 1, None, 1, Recovery(rerun=[[0, 1, 2]], blamed=[])),
        (3, 1, None, MAX_SILENT_LOSSES, Recovery(rerun=[], blamed=[0, 1, 2])),
        # In a stride: each suspect alone first, then the rest.
        (6, 3, 3, 1, Recovery(rerun=[[3], [4], [5], [0, 1, 2]], blamed=[])),
        (5, 4, 4, 1, Recovery(rerun=[[4], [0, 1, 2, 3]], blamed=[])),
    ],
)
def test_recovery_plans(
    tasks: int, stride: int, position: int | None, losses: int, plan: Recovery
) -> None:
    assert plan_recovery(tasks=tasks, stride=stride, position=position, silent_losses=losses) == (
        plan
    )


def test_a_window_stops_at_its_task_cap_and_resumes_when_the_consumer_catches_up() -> None:
    window = Window(max_bytes=1 << 30, max_tasks=10)
    window.pulled(10)
    assert not window.admits()
    assert window.waiting
    assert window.consumed(3) is True  # the scheduler waits: resume it
    assert not window.waiting
    assert window.admits()
    assert window.room() == 3
    assert window.consumed(1) is False  # nobody waits


def test_a_window_counts_bytes_per_task() -> None:
    window = Window(max_bytes=10_000_000, max_tasks=100_000)
    window.pulled(4)
    window.measure(4, 4_000_000)  # 1 MB of input per task
    window.measure(0, 40)  # and tiny results
    assert window.admits()
    assert window.room() == 5  # 10 MB budget, 4 MB out
    window.pulled(6)
    assert not window.admits()
    window.consumed(6)
    assert window.admits()


def test_a_window_shares_its_room_between_chunks() -> None:
    window = Window(max_bytes=1 << 30, max_tasks=100)
    assert window.room(parts=4) == 25  # a quarter of the task cap
    window.pulled(90)
    assert window.room(parts=4) == 10  # no more than is left
    window.consumed(90)
    window.measure(10, 10 * (1 << 20))  # 1 MiB per task: the byte budget is 1024 tasks
    assert window.room(parts=4) == 25  # still under the task cap's share
    small = Window(max_bytes=8 << 20, max_tasks=100)
    small.measure(1, 1 << 20)
    assert small.room(parts=4) == 2  # a quarter of 8 MiB


def test_explicit_tiny_chunks_travel_several_to_a_message() -> None:
    chunker = Chunker(workers=2, total=None, chunksize=3)
    assert chunker.next_size(0) == 3  # not timed yet: the caller's size
    for _ in range(4):
        chunker.observe(3, 3e-6)  # a microsecond per task
    size = chunker.next_size(0)
    assert size > 3
    assert size % 3 == 0  # whole chunks of the caller's size


def test_explicit_chunks_of_real_work_stay_as_asked() -> None:
    chunker = Chunker(workers=2, total=None, chunksize=2)
    chunker.observe(2, MIN_CHUNK_SECONDS * 2)
    assert chunker.next_size(0) == 2


@pytest.mark.parametrize("sequence", [list(range(10)), tuple(range(10)), range(10)])
def test_a_list_tuple_or_range_is_read_by_slices_of_its_own_type(
    sequence: list[int] | tuple[int, ...] | range,
) -> None:
    source = input_of((sequence,))
    assert isinstance(source, SliceInput)
    first, failure = source.take(4)
    rest, _ = source.take(100)
    after, _ = source.take(1)
    assert type(first) is type(sequence)  # a chunk of a range is a range: three numbers
    assert (list(first), list(rest), len(after), failure) == (
        [0, 1, 2, 3],
        list(range(4, 10)),
        0,
        None,
    )


def test_other_inputs_are_read_item_by_item_keeping_what_came_before_a_failure() -> None:
    class Numbers(list[int]):
        """A subclass may slice to something else: read it as any iterable."""

    assert isinstance(input_of((Numbers([1, 2]),)), IteratorInput)
    assert input_of((range(3), "ab")).take(5) == ([(0, "a"), (1, "b")], None)

    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("bad input")

    items, failure = input_of((failing(),)).take(10)
    assert items == [1, 2]
    assert isinstance(failure, ValueError)


def test_a_key_of_copies_is_free_once_its_last_job_is_over() -> None:
    ledger = SharingLedger()
    ledger.start(7)
    ledger.start(7)
    assert ledger.end(7) is False  # the other job still uses the copies
    assert ledger.end(7) is True


def test_a_held_key_outlives_its_jobs_until_let_go() -> None:
    ledger = SharingLedger()
    ledger.hold(3)
    assert ledger.apply_requests() == []
    ledger.start(3)
    assert ledger.end(3) is False  # held: the next job of the call reuses the copies
    ledger.start(3)
    ledger.let_go(3)
    assert ledger.apply_requests() == []  # a job still uses it
    assert ledger.end(3) is True


def test_letting_go_of_an_unused_key_frees_it_at_once() -> None:
    ledger = SharingLedger()
    ledger.hold(5)
    assert ledger.apply_requests() == []
    ledger.start(5)
    assert ledger.end(5) is False
    ledger.let_go(5)
    assert ledger.apply_requests() == [5]
    assert ledger.apply_requests() == []
