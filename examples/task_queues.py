"""Workers take tasks from one queue and put results on another; the main process feeds and collects.

    python examples/task_queues.py

The tutorial's producer/consumer pattern. Closing the task queue ends each
worker's ``for`` loop once the queue is drained: no sentinel values.
"""

import os

import corepool


def worker(tasks: corepool.Queue, results: corepool.Queue) -> int:
    """Handle tasks until the queue is closed and empty; return how many this worker did."""
    done = 0
    for number in tasks:
        results.put((number, number * number, os.getpid()))
        done += 1
    return done


tasks = corepool.Queue()
results = corepool.Queue()
for number in range(20):
    tasks.put(number)
tasks.close()  # no more tasks: workers stop once they have taken them all

workers = [corepool.Process(worker, args=(tasks, results)) for _ in range(3)]
for process in workers:
    process.start()

collected = sorted(results.get(timeout=30) for _ in range(20))
handled = [process.result(timeout=30) for process in workers]

for number, square, pid in collected:
    print(f"{number:2} squared is {square:3} (worker pid {pid})")
print(f"tasks per worker: {handled}; total {sum(handled)}")
