"""The script as one module in each worker, and primitives reached as its globals.

Each test runs a real script (``python script.py``) under every start method:
what a function of ``__main__`` sees in a worker must be what the same code
sees as a module imported there, the standard library's behaviour.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

SCRIPT_HEAD = """
import json, multiprocessing, sys
import corepool

METHOD = sys.argv[1]
out = {}
"""


def _run(tmp_path: Path, body: str, start_method: str) -> dict[str, Any]:
    """Run ``body`` as a script under ``start_method``; return the ``out`` dict it prints."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT_HEAD + textwrap.dedent(body) + "\nprint(json.dumps(out))\n")
    done = subprocess.run(
        [sys.executable, str(script), start_method],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_an_initializer_global_is_seen_by_every_task(tmp_path: Path, start_method: str) -> None:
    out = _run(
        tmp_path,
        """
        MODEL = None

        def init(value):
            global MODEL
            MODEL = value

        def use(x):
            return MODEL

        with corepool.Pool(2, initializer=init, initargs=("loaded",), start_method=METHOD) as p:
            out["seen"] = p.map(use, range(4))
        """,
        start_method,
    )
    assert out["seen"] == ["loaded"] * 4


def test_a_module_cache_is_shared_by_the_scripts_functions(
    tmp_path: Path, start_method: str
) -> None:
    out = _run(
        tmp_path,
        """
        CACHE = {}

        def fill(x):
            CACHE[x] = x * 2
            return len(CACHE)

        def read(x):
            return CACHE.get(x)

        with corepool.Pool(1, start_method=METHOD) as p:
            p.map(fill, range(3))
            out["read"] = p.map(read, range(3))
        """,
        start_method,
    )
    assert out["read"] == [0, 2, 4]


def test_classes_and_exceptions_of_the_script_keep_their_identity(
    tmp_path: Path, start_method: str
) -> None:
    out = _run(
        tmp_path,
        """
        class Point:
            def __init__(self, x):
                self.x = x

        class Refused(Exception):
            pass

        def make(x):
            return Point(x)

        def is_point(point):
            return type(point) is Point

        def refuse(x):
            raise Refused(x)

        with corepool.Pool(2, start_method=METHOD) as p:
            points = p.map(make, range(2))
            out["parent"] = all(type(point) is Point for point in points)
            out["worker"] = p.map(is_point, points)
            try:
                p.map(refuse, [1])
            except Refused:
                out["caught"] = True
        """,
        start_method,
    )
    assert out == {"parent": True, "worker": [True, True], "caught": True}


def test_primitives_as_globals_and_closure_variables(tmp_path: Path, start_method: str) -> None:
    out = _run(
        tmp_path,
        """
        LOCK = corepool.Lock()
        QUEUE = corepool.Queue()

        def put_under_lock(x):
            with LOCK:
                QUEUE.put(x)
            return x

        def adder(lock, total):
            def add(x):
                with lock:
                    total.value += x
            return add

        def announce():
            QUEUE.put("from a process")

        total = corepool.Value("i", 0)
        with corepool.Pool(2, start_method=METHOD) as p:
            p.map(put_under_lock, range(3))
            out["queue"] = sorted(QUEUE.get(timeout=10) for _ in range(3))
            p.map(adder(LOCK, total), range(10))
            out["total"] = total.value
        process = corepool.Process(announce, start_method=METHOD)
        process.start()
        process.join()
        out["process"] = QUEUE.get(timeout=10)
        """,
        start_method,
    )
    assert out == {"queue": [0, 1, 2], "total": 45, "process": "from a process"}


def test_a_lock_and_a_value_through_initargs(tmp_path: Path, start_method: str) -> None:
    out = _run(
        tmp_path,
        """
        def init(lock, counter):
            global LOCK, COUNTER
            LOCK, COUNTER = lock, counter

        def bump(x):
            with LOCK:
                COUNTER.value += 1

        counter = corepool.Value("i", 0)
        with corepool.Pool(
            2, initializer=init, initargs=(corepool.Lock(), counter), start_method=METHOD
        ) as p:
            p.map(bump, range(20))
        out["count"] = counter.value
        """,
        start_method,
    )
    assert out["count"] == 20


def test_a_manager_dict_used_by_pool_tasks(tmp_path: Path, start_method: str) -> None:
    """Workers hold the parent's authkey, so a Manager's proxies connect from tasks."""
    out = _run(
        tmp_path,
        """
        def record(shared, x):
            shared[x] = x * x

        # The guard is for the stdlib's Manager, whose server process imports
        # this script under spawn and forkserver; corepool's workers never do.
        if __name__ == "__main__":
            with multiprocessing.get_context(METHOD).Manager() as manager:
                squares = manager.dict()
                with corepool.Pool(2, start_method=METHOD) as p:
                    p.starmap(record, [(squares, x) for x in range(4)])
                out["squares"] = sorted(squares.items())
        """,
        start_method,
    )
    assert out["squares"] == [[0, 0], [1, 1], [2, 4], [3, 9]]


def test_a_remote_traceback_shows_the_scripts_source_lines(
    tmp_path: Path, start_method: str
) -> None:
    out = _run(
        tmp_path,
        """
        class Model:
            @classmethod
            def fit(cls, x):
                raise ValueError(f"cannot fit {x}")  # the line to show

        def task(x):
            return Model.fit(x)

        with corepool.Pool(1, start_method=METHOD) as p:
            try:
                p.map(task, [1])
            except ValueError as exc:
                out["traceback"] = str(exc.__cause__)
        """,
        start_method,
    )
    assert "script.py" in out["traceback"] and "<dynamic-code>" not in out["traceback"]
    assert 'raise ValueError(f"cannot fit {x}")  # the line to show' in out["traceback"]
    assert "return Model.fit(x)" in out["traceback"]
