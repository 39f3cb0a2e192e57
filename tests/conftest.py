"""Shared fixtures: start methods, and the guard against leaked processes and segments."""

from __future__ import annotations

import contextlib
import gc
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from corepool import _spawn
from corepool.options import START_METHODS

# Tests import helpers from tests/tasks.py by module path, so workers can too.
sys.path.insert(0, str(Path(__file__).parent))

SHM = Path("/dev/shm")
LEAK_GRACE_S = 5.0
# The processes of clusters that a module-scoped fixture owns (tests/dask),
# each cluster as a function giving its current root processes: they outlive
# single tests, and a nanny replaces a worker that a test killed with a new
# process. The fixture checks that every one is gone when it stops the
# cluster; the per-test check leaves them, their descendants and the named
# semaphores they map (a nanny makes new ones for each worker) alone.
CLUSTERS: dict[str, Callable[[], set[int]]] = {}


CLUSTER_START_S = 60


def _cluster_pids() -> set[int]:
    pids = set()
    for roots in list(CLUSTERS.values()):
        for root in roots():
            with contextlib.suppress(psutil.NoSuchProcess):
                pids |= {root, *(p.pid for p in psutil.Process(root).children(recursive=True))}
    return pids


def _cluster_segments() -> set[str]:
    """The /dev/shm names that the processes of module-scoped clusters map."""
    names = set()
    for pid in _cluster_pids():
        with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as maps:
            names |= {
                line.split(str(SHM) + "/", 1)[1].split()[0] for line in maps if str(SHM) in line
            }
    return names


def _stdlib_helpers() -> set[int]:
    """multiprocessing's own long-lived helpers: its fork server and resource tracker.

    Started once by the first stdlib process or Manager of their kind, they
    live as long as this process, as corepool's fork servers do.
    """
    pids = {
        getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None),
        getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None),
    }
    return {pid for pid in pids if pid is not None}


def _children() -> set[int]:
    """Our live descendants, less the fork servers, parked workers and stdlib helpers.

    Fork servers live as long as this process; parked workers wait a few
    seconds to serve the next pool (tests/pool/test_parking.py checks that
    they go away by themselves).
    """
    keep = set(_spawn.forkserver_pids()) | set(_spawn.parked_pids()) | _stdlib_helpers()
    keep |= _cluster_pids()
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.pid not in keep and child.status() != psutil.STATUS_ZOMBIE:
                found.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


_FOREIGN_PID = re.compile(r"[-_](\d+)[-_]")


def _segments() -> set[str]:
    """Names in /dev/shm, less those that name another process tree as creator.

    Some libraries put their creator's pid in the name (``sem.loky-1234-...``,
    ``joblib_memmapping_folder_1234_...``):
    a benchmark running beside the tests must not fail them.
    """
    if not SHM.is_dir():
        return set()
    ours = {os.getpid(), *(child.pid for child in psutil.Process().children(recursive=True))}
    names = set()
    cluster = _cluster_segments() if CLUSTERS else set()
    for path in SHM.iterdir():
        if path.name in cluster:
            continue
        match = _FOREIGN_PID.search(path.name)
        if match is None or int(match.group(1)) in ours:
            names.add(path.name)
    return names


def _held_by_others(names: set[str]) -> set[str]:
    """Those of ``names`` that a process outside this process tree has mapped.

    A named semaphore (``sem.mp-...``) of another test run or benchmark on
    the same machine is mapped by its owner; one this test leaked is mapped
    by this process tree, or by nobody.
    """
    ours = {os.getpid(), *(child.pid for child in psutil.Process().children(recursive=True))}
    held = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in ours:
            continue
        with contextlib.suppress(OSError), open(f"/proc/{entry.name}/maps") as maps:
            held.update(name for line in maps for name in names if f"/dev/shm/{name}" in line)
    return held


_MEMFD_SEGMENT = re.compile(r"/memfd:corepool-(?:buffer|shared)")


def _memfd_segments() -> int:
    """corepool's anonymous segments this process still holds: descriptors plus mappings.

    They have no name in /dev/shm; one left open or mapped after a test is a
    leak of this process (workers' are freed when they exit).
    """
    held = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            held += bool(_MEMFD_SEGMENT.match(os.readlink(f"/proc/self/fd/{fd}")))
    with open("/proc/self/maps") as maps:
        held += sum(bool(_MEMFD_SEGMENT.search(line)) for line in maps)
    return held


def _describe(pid: int) -> str:
    """``pid (its command line, parent N)``, as far as it can still be read."""
    try:
        process = psutil.Process(pid)
        command = " ".join(process.cmdline())[:100]
        return f"{pid} ({command}, parent {process.ppid()})"
    except psutil.Error:
        return str(pid)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves child processes or shared-memory segments behind."""
    processes_before = _children()
    segments_before = _segments()
    memfds_before = _memfd_segments()
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        leaked = _children() - processes_before
        segments = _segments() - segments_before
        if _memfd_segments() > memfds_before:
            gc.collect()  # a result array in a reference cycle holds its mapping
            if _memfd_segments() > memfds_before:
                segments.add("corepool memfd segments held by the test process")
        if segments:
            segments -= _held_by_others(segments)
        if not (leaked or segments) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    described = [_describe(pid) for pid in sorted(leaked)]
    for pid in leaked:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    assert not leaked, f"the test left child processes running: {described}"
    assert not segments, f"the test left shared-memory segments: {sorted(segments)}"


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    """Each start method in turn."""
    return str(request.param)


# -- Dask clusters for the Dask backend's tests -----------------------------------


def stop_cluster(name: str, stop: Callable[[], object]) -> None:
    """Run ``stop``, then check that every process of cluster ``name`` is gone."""
    roots = CLUSTERS[name]()
    tree = set(roots)
    for root in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            tree |= {p.pid for p in psutil.Process(root).children(recursive=True)}
    try:
        stop()
    finally:
        del CLUSTERS[name]
    _, alive = psutil.wait_procs([p for p in map(_process, tree) if p is not None], timeout=20)
    alive = [p for p in alive if not _is_zombie(p)]
    for process in alive:
        process.kill()
    assert not alive, f"the cluster left processes running: {[p.pid for p in alive]}"


def _is_zombie(process: psutil.Process) -> bool:
    try:
        return bool(process.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[str]:
    """A LocalCluster of two single-threaded worker processes; its scheduler's address."""
    distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    # Its nannies run in this process; their worker processes are its children.
    CLUSTERS["local"] = lambda: {
        nanny.process.pid
        for nanny in cluster.workers.values()
        if nanny.process is not None and nanny.process.pid is not None
    }
    yield cluster.scheduler_address
    stop_cluster("local", cluster.close)
