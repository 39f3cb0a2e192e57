"""CPython's own ``multiprocessing`` tests, run against ``corepool.multiprocessing``.

The test classes come from the interpreter's ``test._test_multiprocessing``
(never copied here). As CPython's own suite does, each is combined with a
mixin that supplies the primitives: ``_corepool_mixin`` takes them from a
``corepool.multiprocessing`` context, ``_stdlib_mixin`` from the stdlib's (the
control run, which shows that the harness itself is right). Some tests call
``multiprocessing.Pool`` or ``multiprocessing.Queue`` of the test module
directly; for the corepool runs, the test module's ``multiprocessing`` is the
stdlib module with ``corepool.multiprocessing``'s public names in front
(its submodules, ``multiprocessing.pool.RemoteTraceback`` say, stay the
stdlib's), for the duration of each class.

A test is skipped only when it inspects the stdlib's private internals or
asserts stdlib behaviour that corepool deliberately improves: ``SKIPS``
lists each, with its reason.

    .venv/py3.13/bin/python -m pytest tests/stdlib/test_cpython_multiprocessing.py -q
"""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import sys
import time
import types
import unittest
from collections.abc import Iterator
from typing import Any

import pytest

import corepool.multiprocessing as corepool_mp
import corepool.sync
from corepool._transport import semaphores

try:
    from test import _test_multiprocessing as cpython
except (ImportError, unittest.SkipTest) as missing:  # no test package, or no _multiprocessing
    pytest.skip(
        f"this interpreter has no usable test._test_multiprocessing: {missing}",
        allow_module_level=True,
    )

if not sys.platform.startswith("linux"):
    pytest.skip("corepool.multiprocessing's locks and queues need Linux", allow_module_level=True)

START_METHODS = ("fork", "forkserver", "spawn")
WARM_UP_S = 30.0

# Most-used first (the order they were made to pass).
CLASSES = (
    "_TestPool",
    "_TestPoolWorkerErrors",
    "_TestPoolWorkerLifetime",
    "_TestQueue",
    "_TestLock",
    "_TestSemaphore",
    "_TestEvent",
    "_TestCondition",
    "_TestValue",
    "_TestArray",
    "_TestBarrier",
    "_TestConnection",
    "_TestProcess",
)

# (class, test) -> why the corepool run skips it. The control run skips nothing.
SKIPS: dict[tuple[str, str], str] = {
    ("_TestPool", "test_make_pool"): "inspects the stdlib's private Pool._pool worker list",
    ("_TestPool", "test_resource_warning"): "sets the stdlib's private Pool._state",
    ("_TestPoolWorkerLifetime", "test_pool_worker_lifetime"): (
        "inspects the stdlib's private Pool._pool and calls Pool._repopulate_pool()"
    ),
    ("_TestPoolWorkerErrors", "test_unpickleable_result"): (
        "corepool improves: a lambda result travels by value instead of failing "
        "with MaybeEncodingError"
    ),
    ("_TestQueue", "test_queue_feeder_donot_stop_onexc"): (
        "corepool improves: put() of an object that will not pickle raises at once, "
        "instead of a feeder thread dropping it"
    ),
    ("_TestQueue", "test_queue_feeder_on_queue_feeder_error"): (
        "subclasses the stdlib's multiprocessing.queues.Queue and its private feeder hook"
    ),
    ("_TestProcess", "test_parent_process"): (
        "corepool improves: a child ends with its parent (no orphans), so the grandchild "
        "cannot outlive its killed parent to report it"
    ),
}


def _stdlib_mixin(method: str) -> type:
    context = multiprocessing.get_context(method)
    return _mixin(context, cpython.ProcessesMixin.connection)


def _corepool_mixin(method: str) -> type:
    context = corepool_mp.get_context(method)
    mixin = _mixin(context, corepool_mp.connection)
    mixin.Condition = staticmethod(_ProbedCondition)
    return mixin


class _SemaphoreProbe:
    """``get_value()`` of one of a corepool ``Condition``'s semaphores."""

    def __init__(self, condition: corepool.sync.Condition, number: int) -> None:
        self._condition = condition
        self._number = number

    def get_value(self) -> int:
        return semaphores.sem_value(self._condition._block.sem(self._number))


class _ProbedCondition(corepool.sync.Condition):
    """corepool's ``Condition``, with the stdlib's names for its three semaphores.

    ``_TestCondition.check_invariant`` reads the stdlib's private
    ``_sleeping_count``, ``_woken_count`` and ``_wait_semaphore``; corepool's
    ``Condition`` is the same three-semaphore construction, so the harness
    names them instead of skipping every ``notify`` test.
    """

    __slots__ = ()

    @property
    def _sleeping_count(self) -> _SemaphoreProbe:
        return _SemaphoreProbe(self, 0)

    @property
    def _woken_count(self) -> _SemaphoreProbe:
        return _SemaphoreProbe(self, 1)

    @property
    def _wait_semaphore(self) -> _SemaphoreProbe:
        return _SemaphoreProbe(self, 2)


def _mixin(context: Any, connection: types.ModuleType) -> type:
    """The attributes CPython's ``ProcessesMixin`` has, taken from ``context``."""
    names = [
        "current_process",
        "parent_process",
        "active_children",
        "set_executable",
        "Pool",
        "Pipe",
        "Queue",
        "JoinableQueue",
        "Lock",
        "RLock",
        "Semaphore",
        "BoundedSemaphore",
        "Condition",
        "Event",
        "Barrier",
        "Value",
        "Array",
        "RawValue",
        "RawArray",
    ]
    attributes: dict[str, Any] = {name: staticmethod(getattr(context, name)) for name in names}
    attributes.update(TYPE="processes", Process=context.Process, connection=connection)
    return type("Mixin", (cpython.BaseMixin,), attributes)


def _stdlib_with_corepool() -> types.ModuleType:
    """The stdlib module, with ``corepool.multiprocessing``'s public names in front."""
    module = types.ModuleType("multiprocessing")
    for name in corepool_mp.__all__:
        value = getattr(corepool_mp, name)
        if not isinstance(value, types.ModuleType):
            setattr(module, name, value)
    module.__getattr__ = lambda name: getattr(multiprocessing, name)  # type: ignore[method-assign]
    return module


def _class_setup(cls: Any) -> None:
    # Tests that ask multiprocessing.get_start_method() get the class's method;
    # the methods set before are restored afterwards, as CPython's tearDownModule does.
    cls.saved_methods = (
        multiprocessing.get_start_method(allow_none=True),
        corepool_mp.get_start_method(allow_none=True),
    )
    multiprocessing.set_start_method(cls.START_METHOD, force=True)
    if cls.IMPLEMENTATION == "corepool":
        corepool_mp.set_start_method(cls.START_METHOD, force=True)
        cls.saved_module = cpython.multiprocessing
        cpython.multiprocessing = _stdlib_with_corepool()
    super(cls.harness_base, cls).setUpClass()  # the test class's own, then the mixin's
    pool = getattr(cls, "pool", None)
    if isinstance(pool, corepool_mp.Pool):
        _wait_for_workers(pool)


def _wait_for_workers(pool: corepool_mp.Pool) -> None:
    """Return once every worker of ``pool`` has run a task.

    corepool starts workers in the background; one still starting when a test
    begins would look to the leak guard like a process that test left behind.
    """
    seen: set[int] = set()
    deadline = time.monotonic() + WARM_UP_S
    while len(seen) < pool._native.workers and time.monotonic() < deadline:
        seen.update(pool.starmap(os.getpid, [()] * 64, 1))


def _class_teardown(cls: Any) -> None:
    try:
        super(cls.harness_base, cls).tearDownClass()
    finally:
        if cls.IMPLEMENTATION == "corepool":
            cpython.multiprocessing = cls.saved_module
        stdlib_method, corepool_method = cls.saved_methods
        multiprocessing.set_start_method(stdlib_method, force=True)
        corepool_mp.set_start_method(corepool_method, force=True)


def _skipped(reason: str) -> Any:
    @unittest.skip(reason)
    def skipped(self: unittest.TestCase) -> None:
        """Skipped; see SKIPS."""

    return skipped


def _make_class(implementation: str, method: str, base_name: str) -> type:
    base = getattr(cpython, base_name)
    mixin = _corepool_mixin(method) if implementation == "corepool" else _stdlib_mixin(method)
    name = f"Test{implementation.capitalize()}{method.capitalize()}{base_name[5:]}"
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": name,
        "IMPLEMENTATION": implementation,
        "START_METHOD": method,
        "setUpClass": classmethod(_class_setup),
        "tearDownClass": classmethod(_class_teardown),
    }
    if implementation == "corepool":
        for (class_name, test), reason in SKIPS.items():
            if class_name == base_name:
                namespace[test] = _skipped(reason)
    cls = type(name, (base, mixin, unittest.TestCase), namespace)
    cls.harness_base = cls
    return cls


for _implementation in ("corepool", "stdlib"):
    for _method in START_METHODS:
        for _base_name in CLASSES:
            _cls = _make_class(_implementation, _method, _base_name)
            globals()[_cls.__name__] = _cls
del _implementation, _method, _base_name, _cls  # else pytest runs the last class twice


@pytest.fixture(scope="module", autouse=True)
def stdlib_helpers() -> Iterator[None]:
    """Start the stdlib's resource tracker and fork server before the first test.

    They live as long as this process; started inside a test, the leak guard
    of tests/conftest.py would count them as that test's leftovers.
    """
    multiprocessing.resource_tracker.ensure_running()
    multiprocessing.forkserver.ensure_running()
    yield


@pytest.fixture(autouse=True)
def collect_cycles(no_leaks: None) -> Iterator[None]:
    """Collect garbage after each test, before the leak guard looks (its teardown runs later).

    The stdlib's ``Pool`` keeps itself in reference cycles (bpo-26762, which
    is why CPython's own mixins collect after each class); its named
    semaphores in /dev/shm are unlinked only when it is collected.
    """
    yield
    gc.collect()
