"""Several processes increment a shared counter under a lock; the total is exact.

    python examples/shared_counter.py

``corepool.Value`` and ``corepool.Lock`` can be passed to pool tasks (the
standard library's cannot). ``counter.add(1)`` is atomic by itself; the
explicit lock shows the tutorial's pattern for a multi-step update.
"""

import corepool

PROCESSES = 4
INCREMENTS = 10_000


def increment(counter: corepool.Value, lock: corepool.Lock, times: int) -> None:
    for _ in range(times):
        with lock:  # read, add and write back as one step
            counter.value = counter.value + 1


counter = corepool.Value("q", 0)
lock = corepool.Lock()
with corepool.Pool(PROCESSES) as pool:
    pool.starmap(increment, [(counter, lock, INCREMENTS)] * PROCESSES, chunksize=1)

print(f"counter = {counter.value} (expected {PROCESSES * INCREMENTS})")
assert counter.value == PROCESSES * INCREMENTS
