"""The thread backend on I/O-bound work, against ``ThreadPoolExecutor.map`` in the same run.

Case a: fetch ``--requests`` pages from an HTTP server on 127.0.0.1 that
answers each request after 20 ms (a threaded server in a process of its
own, as a real server would be: in the benchmark's process, its threads
would compete with the clients' for the GIL), with
``--threads`` threads: ``corepool.Pool(backend="thread").map`` (automatic
chunks, and ``chunksize=1``) against ``ThreadPoolExecutor.map``. Each round
runs every contender once, in a shuffled order; the table shows the median
seconds and requests/s, and each corepool line's ratio to the executor
(time, so below 1 is faster).

Usage:
    python benchmarks/bench_threads.py [--rounds N] [--requests 400] [--threads 16]
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import multiprocessing
import statistics
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection

import corepool
from _harness import fmt, print_table, quick_rounds, shuffled

LATENCY_S = 0.02
SEED = 20261127


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # the name http.server calls
        time.sleep(LATENCY_S)
        body = f"<html><a href='/next{self.path}'>next</a></html>".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: one line per request would drown the table."""


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 256  # every client thread may connect at once
    daemon_threads = True


def _serve(port: Connection) -> None:
    with _Server(("127.0.0.1", 0), _SlowHandler) as server:
        port.send(server.server_address[1])
        server.serve_forever()


@contextlib.contextmanager
def slow_server() -> Iterator[str]:
    """A threaded HTTP server on 127.0.0.1, in a child process, answering each GET after 20 ms."""
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(target=_serve, args=(theirs,))
    process.start()
    try:
        yield f"http://127.0.0.1:{ours.recv()}"
    finally:
        process.kill()
        process.join()


def fetch(url: str) -> int:
    """Download one page; its size."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return len(response.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help="rounds (default 5, --quick 2)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 100 requests")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    rounds = quick_rounds(parser, args.rounds, args.quick)
    count = 100 if args.quick else args.requests
    threads = args.threads
    with slow_server() as base:
        urls = [f"{base}/page/{i}" for i in range(count)]
        expected = [fetch(url) for url in urls[:3]]

        def executor() -> list[int]:
            with ThreadPoolExecutor(threads) as pool:
                return list(pool.map(fetch, urls))

        def corepool_auto() -> list[int]:
            with corepool.Pool(threads, backend="thread") as pool:
                return pool.map(fetch, urls)

        def corepool_one() -> list[int]:
            with corepool.Pool(threads, backend="thread") as pool:
                return pool.map(fetch, urls, chunksize=1)

        contenders: dict[str, Callable[[], list[int]]] = {
            "ThreadPoolExecutor.map": executor,
            "corepool thread map": corepool_auto,
            "corepool thread map chunksize=1": corepool_one,
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        print(
            f"{count} requests, {LATENCY_S * 1000:.0f} ms each, {threads} threads, "
            f"{rounds} rounds (serial would take ~{count * LATENCY_S:.1f} s)",
            flush=True,
        )
        for round_no in range(rounds):
            for name in shuffled(list(contenders), SEED + round_no):
                start = time.perf_counter()
                results = contenders[name]()
                times[name].append(time.perf_counter() - start)
                assert results[:3] == expected, name
    peer = statistics.median(times["ThreadPoolExecutor.map"])
    rows = []
    for name, runs in times.items():
        median = statistics.median(runs)
        ratio = "" if name.startswith("Thread") else fmt(median / peer, 2)
        rows.append([name, "a", fmt(median), f"{count / median:,.0f}", ratio])
    print()
    print_table(["contender", "case", "median s", "requests/s", "time / executor"], rows)


if __name__ == "__main__":
    main()
