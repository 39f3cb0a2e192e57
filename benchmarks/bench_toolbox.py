"""Compare corepool's toolbox (Queue, Counter, Pipe) with multiprocessing's and faster-fifo.

Cases:
    a  64-byte messages, 1 producer process -> the parent, 200,000 messages
    b  64 KB messages (65,536 bytes), 1 producer process -> the parent, 4,000
    c  64-byte messages, 2 producer processes -> 2 consumer processes on one
       queue, 200,000 in all
    d  64 KB messages, 2 producers -> 2 consumers, 4,000 in all
    e  a shared counter, 2 processes x 500,000 increments:
       ``corepool.Counter().add(1)``, and ``corepool.Value('q')`` and
       ``multiprocessing.Value('q')`` with ``with v.get_lock(): v.value += 1``;
       the total must be exact
    f  a producer process puts 40 numpy arrays of 8 MB (1,000,000 float64
       each) on a queue, the parent gets and checks them
    g  10,000 ping-pongs of a small tuple between the parent and a child over a
       ``Pipe``, after one warm-up round trip

Queue contenders in a-d: ``corepool.Queue`` with ``put``/``get`` one at a time;
``corepool.Queue`` with ``put_many`` (the producer passes a generator of its
messages; corepool sends up to 1,000 per batch) and ``get_many(1000)``;
``multiprocessing.Queue``; ``multiprocessing.SimpleQueue``; and
``faster_fifo.Queue`` (its defaults: a 1 MB buffer; ``put``/``get`` one at a
time) where it is installed. Every message is a ``bytes`` object whose first 8
bytes are its index; each consumer counts every index it gets, and the counts
must show every message arrived exactly once, whole. In c and d the consumers
send their counts back on a result queue; they stop at a ``None`` per
consumer (multiprocessing, faster-fifo), put by the parent once the
producers have exited, or when the corepool queue is closed (by the parent,
once the producers have exited) and drained.

corepool's processes are ``corepool.Process`` (its default start method, the
fork server); the others use ``multiprocessing.Process`` of the default
context (fork on Linux). Every child first reports ready on a control queue
and waits on an event; the parent starts the clock when all are ready and
sets the event. So the timed window (``median s``) leaves out starting the
processes; ``start s`` is the median time from the first ``start()`` to all
children ready, for reference. A window ends when the parent holds every
message (a, b, f), both consumers' counts (c, d) or both adders' "done" (e).

Rounds are interleaved: each round runs every contender once, in a shuffled
order. A ``corepool ... / x`` column is that corepool row's median time over
row x's (< 1: corepool is faster).

Usage:
    python benchmarks/bench_toolbox.py [--rounds N] [--cases a,b,c] [--quick]
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import itertools
import math
import multiprocessing
import os
import platform
import queue as queue_module
import statistics
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol

import numpy as np

import corepool
from _harness import (
    ABANDONED,
    attempt,
    case_parser,
    deadline,
    exit_if_abandoned,
    fmt,
    mp_method,
    print_table,
    quick_rounds,
    shuffled,
    split_cases,
    timed_case,
)
from corepool.errors import QueueClosed

try:
    import faster_fifo
except ImportError as _exc:
    faster_fifo = None
    FASTER_FIFO_MISSING = f"{type(_exc).__name__}: {_exc}"
else:
    FASTER_FIFO_MISSING = ""

SEED = 20261125
READY, DONE = "ready", "done"
# Seconds a child waits for the go signal, and faster-fifo's put/get timeout
# (it takes no None); the parent's --timeout guards the rest.
GO_TIMEOUT = 120.0
BATCH = 1_000
SMALL, LARGE = 64, 65_536  # message sizes in bytes
ARRAY_FLOATS = 1_000_000  # 8 MB of float64
# A message's first 8 bytes: its index. (A format, not a Struct: corepool pickles
# the children of this __main__ by value, and a Struct does not pickle.)
INDEX_FORMAT, INDEX_BYTES = "<Q", 8
# Messages in a, b, c, d; increments per process in e; arrays in f; round trips in g.
FULL_SIZES = (200_000, 4_000, 200_000, 4_000, 500_000, 40, 10_000)
QUICK_SIZES = (20_000, 400, 20_000, 400, 50_000, 10, 1_000)


# -- children: module level, so that every start method can pickle them --------


class Gate(Protocol):
    def set(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...


def _ready(control: Any, go: Gate) -> None:
    """Report ready, then wait for the parent's go."""
    control.put(READY)
    if not go.wait(GO_TIMEOUT):
        raise TimeoutError(f"no go signal within {GO_TIMEOUT:g} s")


def messages(start: int, stop: int, size: int) -> Iterator[bytes]:
    """Messages ``start`` .. ``stop - 1``: ``size`` bytes each, the index in the first 8."""
    pad = bytes(size - INDEX_BYTES)
    pack = struct.Struct(INDEX_FORMAT).pack
    for index in range(start, stop):
        yield pack(index) + pad


def send(queue: Any, mode: str, items: Iterator[bytes]) -> None:
    """Put ``items``: ``put`` each, ``put_many`` them all, or faster-fifo's ``put`` each."""
    if mode == "put_many":
        queue.put_many(items)
    elif mode == "ff":
        put = queue.put
        for item in items:
            put(item, timeout=GO_TIMEOUT)
    else:
        put = queue.put
        for item in items:
            put(item)


def receive(queue: Any, mode: str) -> Iterator[Any]:
    """Each message until the end: a closed and drained corepool queue, or a ``None``."""
    if mode == "closed":  # corepool, get() one at a time
        yield from queue
    elif mode == "closed_many":  # corepool, get_many(BATCH)
        get_many = queue.get_many
        while True:
            try:
                batch = get_many(BATCH)
            except QueueClosed:
                return
            yield from batch
    elif mode == "ff_none":
        get = queue.get
        while (item := get(timeout=GO_TIMEOUT)) is not None:
            yield item
    else:  # "none": multiprocessing.Queue, SimpleQueue
        yield from iter(queue.get, None)


def tally(items: Iterable[bytes], seen: bytearray) -> int:
    """Count each message's index in ``seen``; return the bytes received."""
    unpack = struct.Struct(INDEX_FORMAT).unpack_from
    nbytes = 0
    for item in items:
        seen[unpack(item)[0]] += 1
        nbytes += len(item)
    return nbytes


def produce(queue: Any, control: Any, go: Gate, mode: str, start: int, stop: int, size: int) -> int:
    """Put messages ``start`` .. ``stop - 1`` of ``size`` bytes, as ``mode`` says."""
    _ready(control, go)
    send(queue, mode, messages(start, stop, size))
    return stop - start


def consume(queue: Any, control: Any, go: Gate, mode: str, n: int) -> None:
    """Get messages until the end; send back the count of each index and the bytes."""
    _ready(control, go)
    seen = bytearray(n)
    nbytes = tally(receive(queue, mode), seen)
    control.put((seen, nbytes))


def add_to_counter(counter: Any, control: Any, go: Gate, times: int) -> None:
    """``corepool.Counter.add(1)``, ``times`` times."""
    _ready(control, go)
    add = counter.add
    for _ in range(times):
        add(1)
    control.put(DONE)


def add_to_mp_value(value: Any, control: Any, go: Gate, times: int) -> None:
    """``multiprocessing.Value``: ``with v.get_lock(): v.value += 1``, ``times`` times."""
    _ready(control, go)
    lock = value.get_lock()
    for _ in range(times):
        with lock:
            value.value += 1
    control.put(DONE)


def echo(conn: Any) -> int:
    """Send back whatever comes, until a ``None``; return how many came."""
    count = 0
    while (message := conn.recv()) is not None:
        conn.send(message)
        count += 1
    return count


def produce_arrays(queue: Any, control: Any, go: Gate, count: int) -> int:
    """Put ``count`` fresh 8 MB float64 arrays, the i-th filled with i."""
    _ready(control, go)
    for i in range(count):
        queue.put(np.full(ARRAY_FLOATS, i, dtype=np.float64))
    return count


# -- the libraries -------------------------------------------------------------


class Child(Protocol):
    """A started child process."""

    def finish(self, timeout: float | None) -> Any: ...

    def kill(self) -> None: ...


class CorepoolChild:
    def __init__(self, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.process = corepool.Process(target, args)
        self.process.start()

    def finish(self, timeout: float | None) -> Any:
        """The target's return value (or its exception)."""
        return self.process.result(timeout)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(10)


class MpChild:
    def __init__(self, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.process = multiprocessing.Process(target=target, args=args, daemon=True)
        self.process.start()

    def finish(self, timeout: float | None) -> Any:
        """``None`` once the process exited with 0 (multiprocessing returns no value)."""
        self.process.join(timeout)
        code = self.process.exitcode
        if code is None:
            raise TimeoutError(f"{self.process.name} did not end within {timeout} s")
        if code != 0:
            raise RuntimeError(f"{self.process.name} exited with code {code}")
        return None

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(10)


@dataclass(frozen=True)
class Lib:
    """Processes, control queues, go events and counters of one library."""

    name: str
    start_method: Callable[[], str]
    child: Callable[[Callable[..., Any], tuple[Any, ...]], Child]
    queue: Callable[[], Any]
    event: Callable[[], Gate]
    pipe: Callable[[], tuple[Any, Any]]
    counter: Callable[[], Any]
    adder: Callable[..., None]


def _corepool_method() -> str:
    from corepool.options import default_start_method

    return str(default_start_method())


COREPOOL = Lib(
    "corepool",
    _corepool_method,
    CorepoolChild,
    corepool.Queue,
    corepool.Event,
    corepool.Pipe,
    corepool.Counter,
    add_to_counter,
)
MP = Lib(
    "mp",
    mp_method,
    MpChild,
    multiprocessing.Queue,
    multiprocessing.Event,
    multiprocessing.Pipe,
    lambda: multiprocessing.Value("q", 0),
    add_to_mp_value,
)

# Case e's second corepool contender: the stdlib's idiom on corepool's Value and its Lock.
LOCKED = replace(COREPOOL, counter=lambda: corepool.Value("q", 0), adder=add_to_mp_value)


def _close(queue: Any, consumers: int) -> None:
    queue.close()


def _send_nones(queue: Any, consumers: int) -> None:
    for _ in range(consumers):
        queue.put(None)


def _leftover_by_get(queue: Any) -> bool:
    try:
        queue.get(timeout=0.2)
    except queue_module.Empty:
        return False
    return True


def _leftover_simple(queue: Any) -> bool:
    return not queue.empty()


@dataclass(frozen=True)
class QueueKind:
    """One queue contender: its queue, how it puts and gets, how consumers stop."""

    name: str
    lib: Lib  # its processes, control queue and go event
    make: Callable[[], Any]
    send_mode: str
    receive_mode: str
    end: Callable[[Any, int], None]  # the parent tells the consumers to stop
    leftover: Callable[[Any], bool]  # whether a message is left (the producers are done)


QUEUE_KINDS = [
    QueueKind(
        "corepool put/get", COREPOOL, corepool.Queue, "put", "closed", _close, _leftover_by_get
    ),
    QueueKind(
        f"corepool put_many/get_many({BATCH})",
        COREPOOL,
        corepool.Queue,
        "put_many",
        "closed_many",
        _close,
        _leftover_by_get,
    ),
    QueueKind("mp.Queue", MP, multiprocessing.Queue, "put", "none", _send_nones, _leftover_by_get),
    QueueKind(
        "mp.SimpleQueue",
        MP,
        multiprocessing.SimpleQueue,
        "put",
        "none",
        _send_nones,
        _leftover_simple,
    ),
]
if faster_fifo is not None:
    QUEUE_KINDS.append(
        QueueKind(
            "faster-fifo", MP, faster_fifo.Queue, "ff", "ff_none", _send_nones, _leftover_by_get
        )
    )


# -- measuring -----------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    seconds: float  # the timed window
    start_s: float = math.nan  # start() to all children ready


class Children:
    """The children of one run: all finished on success, all killed on failure."""

    def __init__(self, lib: Lib, cfg: Config) -> None:
        self.lib = lib
        self.finish_timeout = cfg.timeout if cfg.timeout > 0 else None
        self.started: list[Child] = []
        self.t_start = math.nan

    def start(self, target: Callable[..., Any], *args: Any) -> Child:
        if not self.started:
            self.t_start = time.perf_counter()
        child = self.lib.child(target, args)
        self.started.append(child)
        return child

    def finish(self, child: Child) -> Any:
        return child.finish(self.finish_timeout)

    @contextlib.contextmanager
    def cleanup(self) -> Iterator[Children]:
        try:
            yield self
        except BaseException:
            for child in self.started:
                ABANDONED.append(child)
                with contextlib.suppress(Exception), deadline(30):
                    child.kill()
            raise


def wait_ready(control: Any, children: int) -> None:
    for _ in range(children):
        message = control.get()
        if message != READY:
            raise AssertionError(f"expected {READY!r} from a child, got {message!r}")


def check_once(seen: Sequence[bytearray], nbytes: int, n: int, size: int) -> None:
    """Every index 0 .. n - 1 counted exactly once over ``seen``, every message whole."""
    counts = sum(
        (np.frombuffer(s, dtype=np.uint8).astype(np.int64) for s in seen),
        np.zeros(n, dtype=np.int64),
    )
    lost = np.flatnonzero(counts == 0)
    extra = np.flatnonzero(counts > 1)
    if len(lost) or len(extra) or nbytes != n * size:
        raise AssertionError(
            f"of {n:,} messages: {len(lost):,} lost (first {lost[:5].tolist()}), "
            f"{len(extra):,} got more than once (first {extra[:5].tolist()}); "
            f"{nbytes:,} bytes received, expected {n * size:,}; "
            f"per consumer {[sum(s) for s in seen]} messages"
        )


@dataclass(frozen=True)
class Config:
    rounds: int
    timeout: float
    a_messages: int
    b_messages: int
    c_messages: int
    d_messages: int
    e_adds: int
    f_arrays: int
    g_trips: int


def run_one_to_one(kind: QueueKind, cfg: Config, n: int, size: int) -> Sample:
    """Cases a, b: one producer process, the parent gets ``n`` messages."""
    lib = kind.lib
    queue, control, go = kind.make(), lib.queue(), lib.event()
    kids = Children(lib, cfg)
    with kids.cleanup():
        producer = kids.start(produce, queue, control, go, kind.send_mode, 0, n, size)
        wait_ready(control, 1)
        seen = bytearray(n)
        t0 = time.perf_counter()
        go.set()
        nbytes = tally(itertools.islice(receive(queue, kind.receive_mode), n), seen)
        elapsed = time.perf_counter() - t0
        returned = kids.finish(producer)
        if kind.leftover(queue):
            raise AssertionError(f"a message was left in the queue after all {n:,}")
    check_once([seen], nbytes, n, size)
    if returned not in (None, n):
        raise AssertionError(f"the producer returned {returned!r}, expected {n}")
    return Sample(elapsed, t0 - kids.t_start)


def run_many_to_many(kind: QueueKind, cfg: Config, n: int, size: int) -> Sample:
    """Cases c, d: 2 producers, 2 consumers, one queue; counts back on a result queue."""
    lib = kind.lib
    queue, control, go = kind.make(), lib.queue(), lib.event()
    kids = Children(lib, cfg)
    with kids.cleanup():
        producers = [
            kids.start(produce, queue, control, go, kind.send_mode, 0, n // 2, size),
            kids.start(produce, queue, control, go, kind.send_mode, n // 2, n, size),
        ]
        consumers = [
            kids.start(consume, queue, control, go, kind.receive_mode, n) for _ in range(2)
        ]
        wait_ready(control, 4)
        t0 = time.perf_counter()
        go.set()
        for producer in producers:
            kids.finish(producer)  # exited, so every message it put is in the queue
        kind.end(queue, len(consumers))
        results = [control.get() for _ in consumers]
        elapsed = time.perf_counter() - t0
        for consumer in consumers:
            kids.finish(consumer)
    check_once([seen for seen, _ in results], sum(nbytes for _, nbytes in results), n, size)
    return Sample(elapsed, t0 - kids.t_start)


def run_counter(lib: Lib, cfg: Config) -> Sample:
    """Case e: 2 processes add 1 to a shared counter ``e_adds`` times each."""
    counter, control, go = lib.counter(), lib.queue(), lib.event()
    kids = Children(lib, cfg)
    with kids.cleanup():
        adders = [kids.start(lib.adder, counter, control, go, cfg.e_adds) for _ in range(2)]
        wait_ready(control, len(adders))
        t0 = time.perf_counter()
        go.set()
        for _ in adders:
            if (message := control.get()) != DONE:
                raise AssertionError(f"expected {DONE!r} from an adder, got {message!r}")
        elapsed = time.perf_counter() - t0
        for adder in adders:
            kids.finish(adder)
    if counter.value != 2 * cfg.e_adds:
        raise AssertionError(f"counter is {counter.value:,}, expected {2 * cfg.e_adds:,}")
    return Sample(elapsed, t0 - kids.t_start)


def run_arrays(lib: Lib, cfg: Config) -> Sample:
    """Case f: a producer puts ``f_arrays`` 8 MB arrays; the parent gets and checks them."""
    queue, control, go = lib.queue(), lib.queue(), lib.event()
    kids = Children(lib, cfg)
    with kids.cleanup():
        producer = kids.start(produce_arrays, queue, control, go, cfg.f_arrays)
        wait_ready(control, 1)
        t0 = time.perf_counter()
        go.set()
        for i in range(cfg.f_arrays):
            array = queue.get()
            if array.shape != (ARRAY_FLOATS,) or array[0] != i or array[-1] != i:
                raise AssertionError(
                    f"array {i}: shape {array.shape}, first {array[0]}, last {array[-1]}"
                )
            del array
        elapsed = time.perf_counter() - t0
        kids.finish(producer)
    return Sample(elapsed, t0 - kids.t_start)


def run_ping_pong(lib: Lib, cfg: Config) -> Sample:
    """Case g: ``g_trips`` round trips of a small tuple over a pipe, after a warm-up."""
    here, there = lib.pipe()
    kids = Children(lib, cfg)
    with kids.cleanup():
        child = kids.start(echo, there)
        here.send(("warm-up", -1))
        if here.recv() != ("warm-up", -1):
            raise AssertionError("wrong warm-up reply")
        t0 = time.perf_counter()
        for i in range(cfg.g_trips):
            here.send(("ping", i))
            if (reply := here.recv()) != ("ping", i):
                raise AssertionError(f"sent ('ping', {i}), got back {reply!r}")
        elapsed = time.perf_counter() - t0
        here.send(None)
        echoed = kids.finish(child)
    if echoed not in (None, cfg.g_trips + 1):
        raise AssertionError(f"the child echoed {echoed!r} messages, expected {cfg.g_trips + 1}")
    return Sample(elapsed)


@dataclass(frozen=True)
class Contender:
    name: str
    lib: Lib
    run: Callable[[Config], Sample]


@dataclass
class Result:
    contender: Contender
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(s.seconds for s in self.samples) if self.samples else math.nan

    @property
    def start_median(self) -> float:
        starts = [s.start_s for s in self.samples if not math.isnan(s.start_s)]
        return statistics.median(starts) if starts else math.nan


def run_rounds(cfg: Config, contenders: Sequence[Contender]) -> list[Result]:
    """Run every contender once per round, in a shuffled order; a failure skips the rest."""
    results = {c.name: Result(c) for c in contenders}
    for round_no in range(cfg.rounds):
        for contender in shuffled(contenders, SEED + round_no):
            result = results[contender.name]
            if result.error is not None:
                continue
            gc.collect()
            result.error = attempt(
                contender.name,
                round_no,
                cfg.timeout,
                partial(contender.run, cfg),
                result.samples,
                show_traceback=True,
            )
        print(f"  round {round_no + 1}/{cfg.rounds} done", flush=True)
    return [results[c.name] for c in contenders]


# -- reporting -----------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    """A per-case figure derived from a median time, e.g. messages/s."""

    header: str
    of: Callable[[float], float]
    digits: int = 0

    def format(self, seconds: float) -> str:
        if math.isnan(seconds):
            return "n/a"
        return f"{self.of(seconds):,.{self.digits}f}"


@dataclass
class Case:
    label: str  # "(a)"
    results: list[Result]
    rate: Rate

    def find(self, name: str) -> Result | None:
        return next((r for r in self.results if r.contender.name == name), None)


def report(case: Case, title: str, *, start: bool = True) -> None:
    """Print one case's table, with a ``corepool/x`` column per corepool contender."""
    print(f"\n{case.label} {title}")
    results = case.results
    corepools = [r for r in results if r.contender.lib is COREPOOL]
    headers = ["contender", "start method", "median s", "min s"]
    headers += ["start s"] if start else []
    headers.append(case.rate.header)
    if len(corepools) == 1:
        headers.append("corepool/x")
    else:
        headers += [f"{cp.contender.name.split('(')[0]} / x" for cp in corepools]
    rows = []
    for res in results:
        if not res.samples:
            rows.append([res.contender.name, "", f"FAILED: {res.error}"])
            continue
        row = [
            res.contender.name,
            res.contender.lib.start_method(),
            fmt(res.median),
            fmt(min(s.seconds for s in res.samples)),
        ]
        row += [fmt(res.start_median)] if start else []
        row.append(case.rate.format(res.median))
        row += ["-" if cp is res else fmt(cp.median / res.median, 2) for cp in corepools]
        if res.error is not None:
            row.append(f"(failed later: {res.error})")
        rows.append(row)
    width = len(headers) + 1
    print_table([*headers, ""], [[*r, *([""] * (width - len(r)))] for r in rows])


def summary_line(case: Case) -> str:
    times = ", ".join(f"{r.contender.name} {fmt(r.median)} s" for r in case.results)
    return f"{case.label} {times}"


# -- cases ---------------------------------------------------------------------


def queue_contenders(
    run: Callable[[QueueKind, Config, int, int], Sample], n: int, size: int
) -> list[Contender]:
    def bind(kind: QueueKind) -> Callable[[Config], Sample]:
        return lambda cfg: run(kind, cfg, n, size)

    return [Contender(kind.name, kind.lib, bind(kind)) for kind in QUEUE_KINDS]


def queue_case(cfg: Config, label: str, n: int, size: int, *, many: bool) -> Case:
    run = run_many_to_many if many else run_one_to_one
    case = Case(
        label, run_rounds(cfg, queue_contenders(run, n, size)), Rate("msgs/s", lambda s: n / s)
    )
    what = f"{size:,}-byte messages" if size < 1024 else f"{size // 1024} KB messages"
    if many:
        title = (
            f"2 producers -> 2 consumers, {n:,} {what} through one queue "
            "(corepool: close(); others: a None per consumer)"
        )
    else:
        title = f"1 producer process -> parent, {n:,} {what} through a queue"
    report(case, title)
    return case


def case_a(cfg: Config) -> Case:
    return queue_case(cfg, "(a)", cfg.a_messages, SMALL, many=False)


def case_b(cfg: Config) -> Case:
    return queue_case(cfg, "(b)", cfg.b_messages, LARGE, many=False)


def case_c(cfg: Config) -> Case:
    return queue_case(cfg, "(c)", cfg.c_messages, SMALL, many=True)


def case_d(cfg: Config) -> Case:
    return queue_case(cfg, "(d)", cfg.d_messages, LARGE, many=True)


def case_e(cfg: Config) -> Case:
    contenders = [
        Contender("corepool Counter.add(1)", COREPOOL, lambda c: run_counter(COREPOOL, c)),
        Contender("corepool Value('q') + get_lock()", COREPOOL, lambda c: run_counter(LOCKED, c)),
        Contender("mp Value('q') + get_lock()", MP, lambda c: run_counter(MP, c)),
    ]
    adds = 2 * cfg.e_adds
    case = Case("(e)", run_rounds(cfg, contenders), Rate("increments/s", lambda s: adds / s))
    report(case, f"2 processes x {cfg.e_adds:,} increments of a shared counter")
    return case


def case_f(cfg: Config) -> Case:
    contenders = [
        Contender("corepool", COREPOOL, lambda c: run_arrays(COREPOOL, c)),
        Contender("mp", MP, lambda c: run_arrays(MP, c)),
    ]
    megabytes = cfg.f_arrays * ARRAY_FLOATS * 8 / 1e6
    case = Case("(f)", run_rounds(cfg, contenders), Rate("MB/s", lambda s: megabytes / s))
    report(
        case, f"1 producer process -> parent, {cfg.f_arrays} numpy arrays of 8 MB through a Queue"
    )
    return case


def case_g(cfg: Config) -> Case:
    contenders = [
        Contender("corepool", COREPOOL, lambda c: run_ping_pong(COREPOOL, c)),
        Contender("mp", MP, lambda c: run_ping_pong(MP, c)),
    ]
    trips = cfg.g_trips
    rate = Rate("us/round trip", lambda s: s / trips * 1e6, digits=1)
    case = Case("(g)", run_rounds(cfg, contenders), rate)
    report(case, f"{trips:,} Pipe round trips of a small tuple, parent <-> child", start=False)
    return case


# -- targets -------------------------------------------------------------------


PUT_GET = QUEUE_KINDS[0].name
PUT_MANY = QUEUE_KINDS[1].name
# Issue 11: one at a time at least 2x multiprocessing.Queue (aim: 3x); batches 3x.
SMALL_TARGETS = ((PUT_GET, "put/get", 2), (PUT_MANY, "put_many/get_many", 3))


def speedup(case: Case, name: str, reference: str) -> tuple[float, str]:
    """``reference``'s median over ``name``'s, and both throughputs, for the targets block."""
    mine, ref = case.find(name), case.find(reference)
    if mine is None or ref is None or not mine.samples or not ref.samples:
        return math.nan, "n/a (a contender failed)"
    factor = ref.median / mine.median
    rates = f"{case.rate.format(mine.median)} vs {case.rate.format(ref.median)} {case.rate.header}"
    return factor, f"{factor:.2f}x ({rates})"


def print_targets(cases: dict[str, Case]) -> None:
    print("\nTargets (speed-up: the other's median time / corepool's; > 1: corepool is faster)")
    small = [cases[k] for k in "ac" if k in cases]
    if small:
        print(
            "(1) small messages: put/get one at a time at least 2x multiprocessing.Queue "
            "(aim: 3x); put_many/get_many at least 3x"
        )
        for case in small:
            for name, short, target in SMALL_TARGETS:
                factor, text = speedup(case, name, "mp.Queue")
                verdict = "n/a" if math.isnan(factor) else "met" if factor >= target else "NOT met"
                print(f"    {case.label} {short} (>= {target}x): {text}: {verdict}")
    large = [cases[k] for k in "bd" if k in cases]
    if large:
        print("(2) 64 KB messages: corepool no slower than multiprocessing.Queue")
        for case in large:
            for name, short in ((PUT_GET, "put/get"), (PUT_MANY, "put_many/get_many")):
                factor, text = speedup(case, name, "mp.Queue")
                verdict = "n/a" if math.isnan(factor) else "met" if factor >= 1 else "NOT met"
                print(f"    {case.label} {short}: {text}: {verdict}")
    if "e" in cases:
        case = cases["e"]
        factor, text = speedup(case, "corepool Counter.add(1)", "mp Value('q') + get_lock()")
        if math.isnan(factor):
            verdict = "n/a"
        else:
            verdict = "corepool faster" if factor > 1 else "corepool slower"
        print(f"(3) shared counter, Counter.add(1) vs Value + get_lock(): {text}: {verdict}")


# -- main ----------------------------------------------------------------------


def print_environment() -> None:
    print(f"Python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs")
    print(
        f"corepool {importlib.metadata.version('corepool')} "
        f"(start method {COREPOOL.start_method()}); "
        f"multiprocessing default context (start method {MP.start_method()}); "
        f"numpy {np.__version__}"
    )
    if faster_fifo is None:
        print(f"faster-fifo: not installed here ({FASTER_FIFO_MISSING})")
    else:
        print(
            f"faster-fifo {importlib.metadata.version('faster-fifo')} "
            "(multiprocessing.Process, default context)"
        )


def parse_args(argv: Sequence[str] | None) -> tuple[Config, list[str]]:
    parser = case_parser(
        __doc__.split("\n\n")[0],
        cases="a,b,c,d,e,f,g",
        example="a,c,e",
        quick_help="1/10 the sizes and 2 rounds",
        timeout=120,
    )
    args = parser.parse_args(argv)
    cases = split_cases(parser, args.cases, "abcdefg")
    rounds = quick_rounds(parser, args.rounds, args.quick)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    return Config(rounds, args.timeout, *sizes), cases


def main(argv: Sequence[str] | None = None) -> None:
    cfg, cases = parse_args(argv)
    print_environment()
    print(f"{cfg.rounds} rounds per case, contenders in a shuffled order each round")
    runs: dict[str, Callable[[Config], Case]] = {
        "a": case_a,
        "b": case_b,
        "c": case_c,
        "d": case_d,
        "e": case_e,
        "f": case_f,
        "g": case_g,
    }
    done: dict[str, Case] = {}
    for case in cases:
        done[case] = timed_case(case, partial(runs[case], cfg))
    print("\nSummary (medians)")
    for case in done.values():
        print(summary_line(case))
    print_targets(done)
    exit_if_abandoned("child process(es) of failed runs were killed; exiting.")


if __name__ == "__main__":
    main()
