"""A pool of worker processes behind a web server.

Each request asks for CPU-bound work (count the primes in a range). Done in
the handler thread, the requests take turns on the GIL: one core serves
them all. Sent to a pool of processes, they run on every core while the
handler thread only waits. The server is a real HTTP server on 127.0.0.1;
the load (a fixed number of requests at a fixed concurrency) comes from a
process of its own, so the client's threads do not share the server's GIL.
"""

from __future__ import annotations

import math
import multiprocessing
import statistics
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import corepool
from corepool._demo.common import DemoConfig, Row, check_agree, scaled, serving, warm_up

SCENARIO = "worker pool behind a web server"
REQUESTS = 200
CONCURRENCY = 8
RANGE_START = 1_000_000
RANGE_WIDTH = 6_000  # about 20 ms of pure-Python work per request

Compute = Callable[[tuple[int, int]], int]


# -- the task ---------------------------------------------------------------------


def count_primes(bounds: tuple[int, int]) -> int:
    """Count the primes in ``[low, high)`` by trial division: pure-Python CPU work."""
    low, high = bounds
    count = 0
    for n in range(max(low, 2), high):
        if n % 2 == 0:
            count += n == 2
            continue
        for divisor in range(3, math.isqrt(n) + 1, 2):
            if n % divisor == 0:
                break
        else:
            count += 1
    return count


# -- the server: its handlers call ``compute`` ------------------------------------


class _Server(ThreadingHTTPServer):
    """Answers ``/primes?low=..&high=..`` with ``compute((low, high))``."""

    daemon_threads = True
    request_queue_size = 128  # the default, 5, drops connections from many clients at once

    def __init__(self, compute: Compute) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.compute = compute


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        bounds = (int(query["low"][0]), int(query["high"][0]))
        body = str(self.server.compute(bounds)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the demo's output clean."""


# -- the load: run in a process of its own ----------------------------------------


def _request(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        answer = int(response.read())
    return time.perf_counter() - start, answer


def send_load(base: str, requests: int, concurrency: int) -> tuple[float, list[float], list[int]]:
    """Send ``requests`` requests, ``concurrency`` at a time: seconds, latencies, answers."""
    lows = [RANGE_START + i * RANGE_WIDTH for i in range(requests)]
    urls = [f"{base}/primes?low={low}&high={low + RANGE_WIDTH}" for low in lows]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as clients:
        done = list(clients.map(_request, urls))
    return time.perf_counter() - start, [d[0] for d in done], [d[1] for d in done]


def serve_load(compute: Compute, requests: int) -> tuple[float, list[float], list[int]]:
    """Start the server with ``compute``, send it the load from another process, stop it."""
    with _Server(compute) as server, serving(server, "corepool-demo-webserver"):
        base = f"http://127.0.0.1:{server.server_address[1]}"
        load = corepool.Process(send_load, args=(base, requests, CONCURRENCY))
        load.start()
        seconds, latencies, answers = load.result(timeout=600)
    return seconds, latencies, answers


# -- in the handler thread, on multiprocessing.Pool, on corepool ------------------


def run(config: DemoConfig) -> list[Row]:
    """Serve the same load three ways: requests/s and latency percentiles."""
    requests = scaled(REQUESTS, config.scale, least=CONCURRENCY * 2)
    handler = serve_load(count_primes, requests)
    with multiprocessing.Pool(config.workers) as mp_pool:
        stdlib = serve_load(lambda bounds: mp_pool.apply(count_primes, (bounds,)), requests)
    with corepool.Pool(config.workers) as pool:
        warm_up(pool, __name__, config.workers, progress=False)
        ours = serve_load(lambda bounds: pool.submit(count_primes, bounds).result(), requests)
    check_agree(SCENARIO, handler[2], {"multiprocessing.Pool": stdlib[2], "corepool.Pool": ours[2]})
    title = f"{SCENARIO} ({requests} requests, {CONCURRENCY} at a time)"
    return [
        Row(title, "work in the handler thread", handler[0], _figures(handler), baseline=True),
        Row(title, "multiprocessing.Pool", stdlib[0], _figures(stdlib)),
        Row(title, "corepool.Pool", ours[0], _figures(ours), versus="multiprocessing.Pool"),
    ]


def _figures(load: tuple[float, list[float], list[int]]) -> str:
    seconds, latencies, _ = load
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return (
        f"{len(latencies) / seconds:.0f} req/s, "
        f"p50 {cuts[49] * 1000:.0f} ms, p99 {cuts[98] * 1000:.0f} ms"
    )
