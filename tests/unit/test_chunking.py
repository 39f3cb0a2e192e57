"""The adaptive chunker, without processes."""

from __future__ import annotations

from corepool._chunking import MIN_CHUNK_SECONDS, TARGET_CHUNK_SECONDS, Chunker


def test_explicit_chunksize_wins() -> None:
    chunker = Chunker(workers=2, total=1000, chunksize=7)
    chunker.observe(7, 10.0)
    assert chunker.next_size(0) == 7
    assert chunker.next_size(998) == 7


def test_starts_with_one_task_until_timed() -> None:
    assert Chunker(workers=4, total=None, chunksize=None).next_size(0) == 1


def test_aims_at_the_target_duration() -> None:
    chunker = Chunker(workers=2, total=None, chunksize=None)
    for _ in range(10):  # let the growth cap open up
        chunker.observe(chunker.next_size(0), chunker.next_size(0) * 1e-4)
    assert chunker.seconds_per_task is not None
    assert abs(chunker.seconds_per_task - 1e-4) < 1e-12
    assert chunker.next_size(0) == round(TARGET_CHUNK_SECONDS / 1e-4)


def test_growth_is_capped_after_one_noisy_timing() -> None:
    chunker = Chunker(workers=2, total=None, chunksize=None)
    chunker.observe(1, 1e-9)  # one tiny task says little
    assert chunker.next_size(0) == 8


def test_slow_tasks_go_one_at_a_time() -> None:
    chunker = Chunker(workers=2, total=None, chunksize=None)
    chunker.observe(1, 2.0)
    assert chunker.next_size(0) == 1


def test_shrinks_near_the_end_of_a_sized_input() -> None:
    chunker = Chunker(workers=2, total=10_000, chunksize=None)
    for _ in range(10):
        chunker.observe(100, 100 * 1e-3)  # 1 ms a task
    assert chunker.next_size(0) == 20  # 20 ms of work
    assert chunker.next_size(9_960) == 10  # 40 left / (2 chunks x 2 workers)
    assert chunker.next_size(9_999) == 2  # never below 2 ms of work


def test_tail_chunks_keep_a_minimum_of_work() -> None:
    chunker = Chunker(workers=2, total=1_000_000, chunksize=None)
    for _ in range(10):
        chunker.observe(10_000, 10_000 * 1e-7)  # 0.1 us a task
    assert abs(chunker.next_size(999_000) - MIN_CHUNK_SECONDS / 1e-7) <= 1


def test_stride_grows_for_tiny_tasks_only() -> None:
    chunker = Chunker(workers=2, total=None, chunksize=None)
    assert chunker.stride() == 1  # nothing measured yet
    chunker.observe(1000, 1000 * 1e-7)
    assert chunker.stride() == 200
    slow = Chunker(workers=2, total=None, chunksize=None)
    slow.observe(10, 10 * 2e-5)
    assert slow.stride() == 1
    fixed = Chunker(workers=2, total=None, chunksize=100)
    fixed.observe(100, 100 * 1e-8)
    assert fixed.stride() == 256


def test_zero_time_uses_the_growth_cap() -> None:
    chunker = Chunker(workers=1, total=None, chunksize=None)
    chunker.observe(4, 0.0)
    assert chunker.next_size(0) == 32
