"""corepool's Dask backend against hand-written dask.distributed code, same cluster.

    python benchmarks/bench_dask.py            # W2 and W3, 5 rounds
    python benchmarks/bench_dask.py --quick    # smaller shapes, 2 rounds

Contenders, on one LocalCluster of single-threaded worker processes (one
per core), interleaved in a shuffled order each round:

* ``corepool``: ``Pool(backend="dask", address=...).map(work, items)``,
  automatic chunks.
* ``client.map chunked``: ``client.map`` over chunks chosen by hand (each
  about 150 ms of work, as corepool aims at), results gathered in order.
* ``client.map naive``: ``client.map(work, items)``, one Dask task per item.

Shapes (busy-wait CPU work): W2 = 30,000 tasks x 100 us, W3 = 400 tasks x
10 ms. Targets: corepool within 10% of hand-chunked ``client.map``, and at
least 10x faster than naive ``client.map`` on W2.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from _harness import case_parser, fmt, library_versions, print_table, quick_rounds, shuffled

SHAPES = {"W2": (30_000, 100e-6), "W3": (400, 10e-3)}
QUICK_SHAPES = {"W2": (6_000, 100e-6), "W3": (100, 10e-3)}
HAND_CHUNK_S = 0.15


def spin(seconds: float) -> float:
    """Busy-wait ``seconds`` of CPU time; return it."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds


def spin_many(chunk: list[float]) -> list[float]:
    return [spin(s) for s in chunk]


def _corepool(address: str, items: list[float]) -> list[Any]:
    import corepool

    with corepool.Pool(backend="dask", address=address) as pool:
        return pool.map(spin, items)


def _chunked(client: Any, items: list[float]) -> list[Any]:
    size = max(1, int(HAND_CHUNK_S / items[0]))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    results = client.gather(client.map(spin_many, chunks, pure=False))
    return [r for chunk in results for r in chunk]


def _naive(client: Any, items: list[float]) -> list[Any]:
    return list(client.gather(client.map(spin, items, pure=False)))


def main() -> None:
    parser = case_parser(
        __doc__.splitlines()[0],
        cases="W2,W3",
        example="W2",
        quick_help="smaller shapes (W2: 6,000 tasks; W3: 100), 2 rounds",
        timeout=600,
    )
    args = parser.parse_args()
    rounds = quick_rounds(parser, args.rounds, args.quick)
    shapes = QUICK_SHAPES if args.quick else SHAPES

    import os

    import distributed

    print(library_versions(["corepool", "dask", "distributed"]))
    workers = len(os.sched_getaffinity(0))
    with (
        distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        address = cluster.scheduler_address
        contenders: dict[str, Callable[[list[float]], list[Any]]] = {
            "corepool": lambda items: _corepool(address, items),
            "client.map chunked": lambda items: _chunked(client, items),
            "client.map naive": lambda items: _naive(client, items),
        }
        for case in args.cases.split(","):
            tasks, seconds = shapes[case]
            items = [seconds] * tasks
            times: dict[str, list[float]] = {name: [] for name in contenders}
            print(f"\ncase {case}: {tasks} tasks x {seconds * 1e6:.0f} us on {workers} workers")
            for round_no in range(rounds):
                for name in shuffled(list(contenders), seed=round_no):
                    start = time.perf_counter()
                    result = contenders[name](items)
                    times[name].append(time.perf_counter() - start)
                    assert result == items, f"{name} returned wrong results"
            medians = {name: statistics.median(t) for name, t in times.items()}
            rows = [
                [
                    case,
                    name,
                    fmt(medians[name]),
                    fmt(medians[name] / medians["corepool"], 2),
                    fmt(tasks * seconds / workers / medians[name], 2),
                ]
                for name in contenders
            ]
            print_table(["case", "contender", "median s", "x corepool", "efficiency"], rows)


if __name__ == "__main__":
    main()
