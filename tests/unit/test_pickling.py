"""Pickling rules, without processes: plain pickle when it works, cloudpickle when needed."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading

import pytest

from corepool._protocol import ErrorSite
from corepool._transport.frames import BATCH, decode, encode, is_plain
from corepool._transport.pickling import dumps, dumps_by_value, loads, remote_error


class NeedsArgs(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


def test_plain_data_uses_plain_pickle() -> None:
    data = dumps([1, "a", {"b": 2.0}])
    assert data == pickle.dumps([1, "a", {"b": 2.0}], 5)


def test_lambdas_go_by_value() -> None:
    data = dumps(lambda x: x + 1)
    assert loads(data)(1) == 2
    assert loads(dumps_by_value(lambda x: x * 3))(2) == 6


def test_unpicklable_raises() -> None:
    with pytest.raises(TypeError):
        dumps(threading.Lock())


def test_remote_error_keeps_a_picklable_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        error = remote_error(exc)
    assert error.site is ErrorSite.TASK
    assert error.type_name == "ValueError" and error.message == "boom"
    assert "raise ValueError" in error.traceback_text
    assert error.exception is not None and error.problem == ""
    assert str(loads(error.exception)) == "boom"


def test_remote_error_of_an_exception_that_will_not_unpickle() -> None:
    try:
        raise NeedsArgs(1, 2)
    except NeedsArgs as exc:
        error = remote_error(exc)
    assert error.exception is None
    assert error.type_name.endswith("NeedsArgs")
    assert error.problem.startswith("it pickles but will not unpickle: TypeError:")
    assert "missing 1 required positional argument: 'b'" in error.problem


def test_remote_error_of_an_exception_that_will_not_pickle() -> None:
    try:
        raise ValueError(threading.Lock())
    except ValueError as exc:
        error = remote_error(exc)
    assert error.exception is None
    assert error.problem.startswith("it will not pickle: TypeError: cannot pickle")


def test_exceptions_pickle_as_python_pickles_them_whatever_tblib_installed() -> None:
    """dask.distributed installs tblib's reducers for every exception type, which rebuild a
    ``SystemExit`` without its ``code``; a task's error must not depend on that."""
    pytest.importorskip("tblib", reason="tblib comes with the dask extra")
    script = (
        "import tblib.pickling_support\n"
        "tblib.pickling_support.install()\n"
        "from corepool._transport.pickling import loads, remote_error\n"
        "try:\n"
        "    raise SystemExit(3)\n"
        "except SystemExit as exc:\n"
        "    error = remote_error(exc)\n"
        "print(loads(error.exception).code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "3"


@pytest.mark.parametrize(
    ("obj", "plain"),
    [
        (b"bytes", True),
        (("ping", 1, 2.5, None, True), True),
        ([1, "two"] * 8, True),  # 16 items: still looked through
        ([1, "two"] * 8 + [3], False),  # 17: the packer
        (("nested", ("tuple",)), False),
        ({"a": 1}, False),
        (bytearray(b"x"), False),  # a buffer: it may go out of band
    ],
)
def test_messages_of_scalars_skip_the_packer(obj: object, plain: bool) -> None:
    assert is_plain(obj) is plain
    frame, fds, _ = encode(obj, 1 << 20, 0)
    assert decode(frame, fds) == (obj, False)


def test_a_batch_of_scalars_stays_a_batch() -> None:
    frame, fds, _ = encode([1, 2, 3], 1 << 20, BATCH)
    assert decode(frame, fds) == ([1, 2, 3], True)
