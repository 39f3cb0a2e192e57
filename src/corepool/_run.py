"""``corepool run MODULE:FUNCTION [INPUT]``: map a function over the lines of a file or stdin.

Runs in the parent (the command line), on the public API; workers import
this module only for ``LineTask``, which parses a line, calls the function
and encodes its JSON output line, so that the parent only reads and writes.
Imports ``corepool`` (its public names) and nothing below.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

import corepool

__all__ = ["LineTask", "add_run_command", "run_command"]

EXIT_FAILED_ITEMS = 1
EXIT_BAD_INVOCATION = 2
EXIT_INTERRUPTED = 130

_EXAMPLE = """\
example:
  corepool run mymodule:resize paths.txt -o thumbs.jsonl --workers 4 --stats
  cat records.jsonl | corepool run mymodule:score --jsonl --unordered

Each output line is {"index": N, "result": ...} or, for an item that failed,
{"index": N, "error": {"type": ..., "message": ...}}. The exit status is 0 if
every item succeeded, 1 if any failed, 2 for a bad invocation.
"""


class InvocationError(Exception):
    """The command cannot start: no such module, no such function, unreadable input."""


class LineTask:
    """What workers run for one input line: parse it, call the function, encode a JSON line.

    Picklable by reference (this class and the user's function), so workers
    import the user's module as the parent did. Whatever the function raises
    becomes the line's error record, with its index.

    Args:
        fn: The user's function.
        jsonl: Parse each line as JSON (``--jsonl``) rather than pass its text.
    """

    def __init__(self, fn: Callable[[Any], Any], jsonl: bool) -> None:
        self.fn = fn
        self.jsonl = jsonl
        # How the pool names the call in errors and stats: imap(resize).
        self.__name__ = getattr(fn, "__qualname__", None) or repr(fn)

    def __call__(self, task: tuple[int, str]) -> str:
        """The output line for the line ``task = (index, text)``.

        Raises:
            ItemFailed: The function failed on the item, or the line is not
                JSON: the pool counts the item as failed, and the caller
                writes its error line.
        """
        index, text = task
        try:
            value = json.loads(text) if self.jsonl else text
            return json.dumps({"index": index, "result": self.fn(value)})
        except Exception as exc:
            raise ItemFailed(index, type(exc).__name__, str(exc)) from exc


class ItemFailed(Exception):
    """An item's error, with the index of its line (unordered results need it)."""

    def __init__(self, index: int, type_name: str, message: str) -> None:
        super().__init__(index, type_name, message)
        self.index, self.type_name, self.message = index, type_name, message


def error_line(index: int | None, type_name: str, message: str) -> str:
    """The output line of an item that failed."""
    return json.dumps({"index": index, "error": {"type": type_name, "message": message}})


def add_run_command(commands: Any) -> None:
    """Register ``run`` on the ``corepool`` command's subparsers."""
    run = commands.add_parser(
        "run",
        help="map MODULE:FUNCTION over the lines of a file or stdin, one JSON line per result",
        description="Map MODULE:FUNCTION over the lines of INPUT (or stdin) on a pool, "
        "writing one JSON line per item.",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("target", metavar="MODULE:FUNCTION", help="imported as `python -m` would")
    run.add_argument("input", metavar="INPUT", nargs="?", default="-", help="a file, or - (stdin)")
    run.add_argument("--jsonl", action="store_true", help="each line is a JSON value")
    run.add_argument("--unordered", action="store_true", help="write results as they finish")
    run.add_argument("-o", "--output", metavar="FILE", help="write here rather than to stdout")
    run.add_argument("--workers", type=int, default=None, help="tasks at once (all cores)")
    run.add_argument("--timeout", type=float, default=None, help="seconds per task (process)")
    run.add_argument("--retries", type=int, default=0, help="tries again after a crash or timeout")
    run.add_argument("--backend", choices=("process", "thread", "dask"), default="process")
    run.add_argument("--address", default=None, help="the Dask scheduler (--backend dask)")
    run.add_argument("--stats", action="store_true", help="print stats and advice to stderr")
    run.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run_command(args: argparse.Namespace) -> int:
    """Run ``corepool run``; return the exit status."""
    try:
        with contextlib.ExitStack() as files:
            fn = resolve(args.target)
            source = _open(files, args.input, "r", sys.stdin)
            output = _open(files, args.output, "w", sys.stdout)
            return _map_lines(args, fn, source, output)
    except InvocationError as exc:
        print(f"corepool run: {exc}", file=sys.stderr)
        return EXIT_BAD_INVOCATION
    except KeyboardInterrupt:
        print("corepool run: interrupted; the workers were stopped", file=sys.stderr)
        return EXIT_INTERRUPTED


def resolve(target: str) -> Callable[[Any], Any]:
    """The function that ``MODULE:FUNCTION`` names, its module imported as ``python -m`` does.

    Raises:
        InvocationError: The target is malformed, or names nothing callable.
    """
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise InvocationError(f"expected MODULE:FUNCTION (such as mytasks:resize), got {target!r}")
    # As `python -m`: the current directory first, so that its modules are
    # found, here and (through the pool's sys.path) in every worker.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise InvocationError(
                f"no module named {module_name!r} in {os.getcwd()} or on sys.path; "
                "check the name, or run from the directory that holds it"
            ) from None
        raise InvocationError(_import_failed(module_name, exc)) from None
    except Exception as exc:
        raise InvocationError(_import_failed(module_name, exc)) from None
    fn: Any = module
    for part in attribute.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise InvocationError(
                f"module {module_name!r} ({getattr(module, '__file__', '?')}) has no "
                f"function {attribute!r}; check the name after the colon"
            )
    if not callable(fn):
        raise InvocationError(
            f"{target} is a {type(fn).__name__}, not a function; name a function to call"
        )
    return fn  # type: ignore[no-any-return]


def _import_failed(module_name: str, exc: BaseException) -> str:
    return (
        f"importing {module_name!r} failed with {type(exc).__name__}: {exc}; "
        f"run `python -c 'import {module_name}'` to see the traceback"
    )


def _open(files: contextlib.ExitStack, path: str | None, mode: str, std: IO[str]) -> IO[str]:
    """The file at ``path`` (closed with ``files``), or ``std`` for ``-`` or no path."""
    if path is None or path == "-":
        return std
    try:
        return files.enter_context(open(path, mode, encoding="utf-8"))
    except OSError as exc:
        if mode == "r":
            what, fix = "read input", "give a readable file, or - for stdin"
        else:
            what, fix = "write output", "check the directory and its permissions"
        raise InvocationError(f"cannot {what} {path!r}: {exc.strerror or exc}; {fix}") from None


def _lines(source: IO[str]) -> Iterator[tuple[int, str]]:
    """``(index, text)`` of each line, without its line ending."""
    try:
        for index, line in enumerate(source):
            yield index, line.rstrip("\r\n") if line.endswith("\n") else line
    except (OSError, UnicodeDecodeError) as exc:
        raise InvocationError(f"cannot read the input: {exc}") from None


def _map_lines(args: argparse.Namespace, fn: Callable[[Any], Any], source: IO[str],
               output: IO[str]) -> int:  # fmt: skip
    progress = not args.no_progress and sys.stderr.isatty()
    try:
        pool = corepool.Pool(
            args.workers,
            backend=args.backend,
            address=args.address,
            task_timeout=args.timeout,
            retries=args.retries,
        )
    except ValueError as exc:
        raise InvocationError(str(exc)) from None
    failed = 0
    with pool:
        calls = pool.imap_unordered if args.unordered else pool.imap
        results = calls(
            LineTask(fn, args.jsonl), _lines(source), progress=progress, return_exceptions=True
        )
        for outcome in results:
            if isinstance(outcome, ItemFailed):
                line = error_line(outcome.index, outcome.type_name, outcome.message)
                failed += 1
            elif isinstance(outcome, BaseException):  # the worker died, or the task timed out
                index = getattr(outcome, "task_index", None)
                line = error_line(index, type(outcome).__name__, str(outcome))
                failed += 1
            else:
                line = outcome
            output.write(line + "\n")
        output.flush()
    if args.stats:
        # The pool served this one call: its figures add start-up to the call's.
        stats = pool.stats()
        print(stats.summary(), file=sys.stderr)
        for line in stats.advice[1:]:
            print(f"advice: {line}", file=sys.stderr)
    return EXIT_FAILED_ITEMS if failed else 0
