"""Large buffers through shared memory, both ways; SharedArray; load-once shared objects.

Buffers of ``buffer_threshold`` (1 MiB) or more travel as shared-memory
segments: workers see read-only views, the parent gets writable arrays of
its own. The autouse ``no_leaks`` fixture also fails a test after which this
process still holds a corepool segment (a descriptor or a mapping).
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest

import corepool
import tasks

np = pytest.importorskip("numpy", reason="numpy is an optional extra: pip install corepool[numpy]")

MIB = 1 << 20
BIG = 300_000  # float64 elements: 2.3 MiB, above the 1 MiB threshold


def _arrays() -> dict[str, Any]:
    """Arrays of many dtypes and layouts, small and large."""
    big = np.arange(BIG, dtype=np.float64)
    structured = np.zeros(
        BIG // 4, dtype=[("id", "<i8"), ("price", "<f8"), ("flag", "?"), ("code", "S3")]
    )
    structured["id"] = np.arange(len(structured))
    structured["code"] = b"abc"
    return {
        "float64-c": big,
        "float32-2d-fortran": np.asfortranarray(np.arange(BIG, dtype=np.float32).reshape(500, -1)),
        "int8-3d": np.arange(3 * MIB, dtype=np.int64).astype(np.int8).reshape(3, 1024, -1),
        "uint16": np.arange(MIB, dtype=np.uint16),
        "bool": np.arange(2 * MIB) % 3 == 0,
        "complex128": big + 1j * big,
        "datetime64": np.arange(BIG).astype("datetime64[s]"),
        "structured": structured,
        "non-contiguous-slice": big[::3],
        "transposed": np.arange(BIG, dtype=np.float64).reshape(600, 500).T,
        "zero-d": np.array(3.5),
        "empty": np.zeros((0, 7)),
        "small": np.arange(10),
    }


ARRAYS = _arrays()


@pytest.mark.parametrize("name", list(ARRAYS))
def test_arrays_come_back_equal(name: str, start_method: str) -> None:
    array = ARRAYS[name]
    with corepool.Pool(2, start_method=start_method) as pool:
        [back] = pool.map(tasks.identity, [array])
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    assert np.array_equal(back, array)
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        assert back.flags.f_contiguous


def test_large_inputs_are_read_only_views_in_workers_results_are_writable() -> None:
    big, small = np.zeros(BIG), np.zeros(10)
    with corepool.Pool(2) as pool:
        assert pool.map(tasks.is_writable, [big, small]) == [False, True]
        [outcome] = pool.map(tasks.try_to_write, [big])
        assert "read-only" in outcome
        results = pool.map(np.copy, [big, big])
    assert all(result.flags.writeable for result in results)
    results[0][0] = 5.0  # the parent's result is its own
    assert results[1][0] == 0.0
    assert big[0] == 0.0


def test_without_a_threshold_everything_goes_through_the_connection() -> None:
    with corepool.Pool(2, buffer_threshold=None) as pool:
        assert pool.map(tasks.is_writable, [np.zeros(BIG)]) == [True]


def test_the_threshold_decides_what_travels_through_shared_memory() -> None:
    array = np.zeros(1000)  # 8000 bytes
    with corepool.Pool(1, buffer_threshold="4KiB") as pool:
        assert pool.map(tasks.is_writable, [array, array[:100]]) == [False, True]


def test_one_argument_sent_with_many_tasks_is_copied_once_per_call() -> None:
    big = np.arange(BIG, dtype=np.float64)
    with corepool.Pool(2) as pool:
        sums = pool.starmap(np.sum, [(big,)] * 40, chunksize=1)
    assert sums == [big.sum()] * 40


def test_many_concurrent_large_items_and_results() -> None:
    items = [np.full(MIB // 4, i, dtype=np.float64) for i in range(40)]  # 2 MiB each
    with corepool.Pool(2) as pool:
        results = sorted(pool.imap_unordered(tasks.identity, items), key=lambda a: a[0])
        again = pool.map(tasks.identity, items, chunksize=3)
    for i, (result, second) in enumerate(zip(results, again, strict=True)):
        assert result[0] == i == second[-1]
        assert len(result) == MIB // 4


def test_bytes_like_objects() -> None:
    data = bytes(range(256)) * (2 * MIB // 256)
    with corepool.Pool(2) as pool:
        as_bytes, as_bytearray, as_view = pool.map(
            tasks.identity, [data, bytearray(data), memoryview(data)]
        )
    assert type(as_bytes) is bytes
    assert as_bytes == data
    assert type(as_bytearray) is bytearray
    assert as_bytearray == data
    assert type(as_view) is memoryview
    assert as_view == data


def test_pandas_frames_and_series() -> None:
    pd = pytest.importorskip("pandas", reason="pandas is an optional extra")
    frame = pd.DataFrame(
        {
            "price": np.linspace(0, 1, BIG),
            "volume": np.arange(BIG),
            "symbol": np.where(np.arange(BIG) % 2 == 0, "AAPL", "MSFT"),
        }
    )
    with corepool.Pool(2) as pool:
        back_frame, back_series = pool.map(tasks.identity, [frame, frame["price"]])
    pd.testing.assert_frame_equal(back_frame, frame)
    pd.testing.assert_series_equal(back_series, frame["price"])


def test_a_worker_killed_holding_large_buffers_leaves_nothing(start_method: str) -> None:
    with corepool.Pool(2, start_method=start_method) as pool:
        [error] = pool.map(tasks.sigkill_with, [np.zeros(BIG)], return_exceptions=True)
        assert isinstance(error, corepool.WorkerDied)
        assert error.signal == "SIGKILL"
        assert pool.map(np.sum, [np.ones(BIG)]) == [BIG]


def test_a_timeout_during_a_large_transfer_leaves_nothing() -> None:
    with corepool.Pool(1, task_timeout=0.3) as pool:
        [error] = pool.starmap(tasks.sleep_then, [(5, np.zeros(BIG))], return_exceptions=True)
        assert isinstance(error, corepool.TaskTimeout)


# -- SharedArray ---------------------------------------------------------------


def test_tasks_write_their_slices_of_a_shared_array(start_method: str) -> None:
    out = corepool.SharedArray.zeros(1000)
    with corepool.Pool(2, start_method=start_method) as pool:
        counts = pool.starmap(
            tasks.fill_slice,
            [(out, start, start + 100, start / 100) for start in range(0, 1000, 100)],
        )
    assert counts == [100] * 10
    assert out.array.tolist() == [float(i // 100) for i in range(1000)]


def test_a_shared_array_made_in_a_worker_is_shared_with_the_parent() -> None:
    with corepool.Pool(2) as pool:
        made = pool.starmap(tasks.shared_array_of, [(5, 7), (3, 1)])
        assert [m.array.tolist() for m in made] == [[7] * 5, [1] * 3]
        # Sent back to a task, it is the same memory: the task's write shows here.
        pool.starmap(tasks.fill_slice, [(made[0], 0, 2, 9)])
    assert made[0].array.tolist() == [9, 9, 7, 7, 7]


def test_shared_array_basics() -> None:
    source = np.arange(12, dtype=np.int32).reshape(3, 4)
    shared = corepool.SharedArray.from_array(source)
    assert (shared.shape, shared.dtype, shared.nbytes, len(shared)) == ((3, 4), np.int32, 48, 3)
    assert np.array_equal(np.asarray(shared), source)
    shared[1, 1] = 100
    assert shared[1, 1] == 100
    assert source[1, 1] == 5  # a copy was taken
    assert repr(shared) == "SharedArray(shape=(3, 4), dtype=int32)"
    assert corepool.SharedArray.zeros(0).shape == (0,)
    with pytest.raises(TypeError, match="holds objects"):
        corepool.SharedArray.zeros(3, object)


def test_a_shared_array_pickled_another_way_says_so() -> None:
    shared = corepool.SharedArray.zeros(4)
    message = r"travels only through corepool .* shared\.array\.copy\(\)"
    with pytest.raises(TypeError, match=message):
        pickle.dumps(shared)
    with pytest.raises(TypeError, match=message):
        pickle.loads(pickle.dumps(shared, protocol=5))


# -- load-once shared objects --------------------------------------------------


def test_shared_objects_load_once_per_worker(start_method: str) -> None:
    table = np.ones(BIG)
    with corepool.Pool(2, start_method=start_method, shared={"table": table}) as pool:
        infos = pool.map(tasks.state_item_info, ["table"] * 20, chunksize=1)
    by_pid: dict[int, set[int]] = {}
    for pid, object_id, writable, total in infos:
        by_pid.setdefault(pid, set()).add(object_id)
        assert not writable
        assert total == BIG
    assert all(len(ids) == 1 for ids in by_pid.values())  # loaded once, not per task


def test_a_shared_object_survives_a_worker_crash() -> None:
    with corepool.Pool(1, shared={"table": np.ones(BIG)}) as pool:
        pool.map(tasks.sigkill_on, [7], return_exceptions=True)
        [(_, _, _, total)] = pool.map(tasks.state_item_info, ["table"])
    assert total == BIG


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="buffer_threshold must be a number of bytes"):
        corepool.Pool(buffer_threshold="lots")
    with pytest.raises(TypeError, match="shared must be a mapping of names"):
        corepool.Pool(shared=[1, 2])  # type: ignore[arg-type]
