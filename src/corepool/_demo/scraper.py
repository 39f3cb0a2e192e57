"""A web scraper over many sites: fetch pages, extract their links.

Fetching is waiting, not computing: a page costs the client microseconds of
CPU and the server tens of milliseconds of latency. So threads, which wait
together, beat processes, of which there are only as many as cores. The
"sites" are a local HTTP server on 127.0.0.1 that answers after a set
latency. It runs in a process of its own so that its threads do not compete
with the scraper's for this process's GIL. (At this demo's size the
difference measured small: 100 pages on 16 threads took 0.36 s with the
server in this process, 0.37 s with it in its own, best of 3 on 2 cores.)
"""

from __future__ import annotations

import contextlib
import multiprocessing
import re
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import corepool
from corepool._demo.common import (
    DemoConfig,
    Row,
    check_agree,
    scaled,
    serving,
    timed,
    warm_up,
)

SCENARIO = "web scraper"
PAGES = 100
LATENCY_S = 0.05
THREADS = 16
LINKS_PER_PAGE = 20
_LINK = re.compile(rb'<a href="([^"]+)"')


# -- the task ---------------------------------------------------------------------


def fetch_links(url: str) -> tuple[str, list[str]]:
    """Fetch the page at ``url``; the page and the links it holds."""
    with urllib.request.urlopen(url, timeout=30) as response:
        html = response.read()
    return url, [link.decode() for link in _LINK.findall(html)]


# -- the sites: a server with latency, in a process of its own --------------------


class _Sites(ThreadingHTTPServer):
    """Answers ``/page/<n>`` with an HTML page of links after ``latency_s``."""

    daemon_threads = True
    request_queue_size = 128  # the default, 5, drops connections from 16 threads at once

    def __init__(self, latency_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _PageHandler)
        self.latency_s = latency_s


class _PageHandler(BaseHTTPRequestHandler):
    server: _Sites

    def do_GET(self) -> None:
        time.sleep(self.server.latency_s)  # the network and the far server, simulated
        number = int(self.path.rsplit("/", 1)[-1])
        links = "".join(
            f'<li><a href="/page/{(number * 7 + k) % 1000}">page {k}</a> some text</li>'
            for k in range(LINKS_PER_PAGE)
        )
        body = f"<html><body><h1>Page {number}</h1><ul>{links}</ul></body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the demo's output clean."""


def serve_sites(conn: corepool.Connection, latency_s: float) -> None:
    """Serve pages until told to stop; run in a process of its own. Sends its port first."""
    with _Sites(latency_s) as server, serving(server, "corepool-demo-sites"):
        conn.send(server.server_address[1])
        with contextlib.suppress(EOFError):  # EOF: the parent is gone, stop too
            conn.recv()


@contextlib.contextmanager
def sites(latency_s: float) -> Iterator[str]:
    """Start the sites' server process; its base URL while the block runs, then stop it."""
    ours, theirs = corepool.Pipe()
    server = corepool.Process(serve_sites, args=(theirs, latency_s))
    server.start()
    try:
        if not ours.poll(30):
            raise RuntimeError(
                "web scraper: the local HTTP server did not start within 30 s; "
                "is 127.0.0.1 usable here? Run the demo with --only to skip the scraper."
            )
        yield f"http://127.0.0.1:{ours.recv()}"
    finally:
        ours.send("stop")
        server.result(timeout=30)
        ours.close()
        theirs.close()


# -- serial, threads, processes ---------------------------------------------------


def scrape_serially(urls: list[str]) -> list[tuple[str, list[str]]]:
    """The loop a pool replaces."""
    return [fetch_links(url) for url in urls]


def run(config: DemoConfig) -> list[Row]:
    """Time fetching the pages serially, on threads and on processes."""
    count = scaled(PAGES, config.scale, least=THREADS)
    with sites(LATENCY_S) as base:
        urls = [f"{base}/page/{n}" for n in range(count)]
        serial_s, expected = timed(lambda: scrape_serially(urls))
        with ThreadPoolExecutor(max_workers=THREADS) as executor:
            executor_s, executor_links = timed(lambda: list(executor.map(fetch_links, urls)))
        with corepool.Pool(THREADS, backend="thread") as threads:
            threads_s, thread_links = timed(lambda: threads.map(fetch_links, urls))
        with multiprocessing.Pool(config.workers) as mp_pool:
            stdlib_s, stdlib = timed(lambda: mp_pool.map(fetch_links, urls))
        with corepool.Pool(config.workers) as pool:
            warm_up(pool, __name__, config.workers, progress=False)
            ours_s, ours = timed(lambda: pool.map(fetch_links, urls))
    check_agree(
        SCENARIO,
        expected,
        {
            "ThreadPoolExecutor": executor_links,
            'corepool.Pool(backend="thread")': thread_links,
            "multiprocessing.Pool": stdlib,
            "corepool.Pool": ours,
        },
    )
    title = f"{SCENARIO} ({count} pages, {LATENCY_S * 1000:.0f} ms latency)"
    on_threads = f"{THREADS} threads"
    on_processes = f"{config.workers} processes"
    return [
        Row(title, "serial loop", serial_s, baseline=True),
        Row(title, "ThreadPoolExecutor", executor_s, on_threads),
        Row(
            title,
            'corepool.Pool(backend="thread")',
            threads_s,
            on_threads,
            versus="ThreadPoolExecutor",
        ),
        Row(title, "multiprocessing.Pool", stdlib_s, on_processes),
        Row(title, "corepool.Pool", ours_s, on_processes, versus="multiprocessing.Pool"),
    ]
