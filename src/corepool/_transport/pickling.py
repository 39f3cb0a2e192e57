"""Pickling that works for whatever a task sends, as fast as plain pickle when it can.

Runs in the parent and in every worker. Plain pickle (protocol 5) is tried
first; objects that it cannot pickle, or that it would pickle by a reference
to ``__main__`` (which workers never import), go through cloudpickle, which
sends them by value (``by_value``, imported on first use, says where the
script's functions land in a worker). This module keeps the namespace they
land in (``main_namespace``, ``new_main_module``).
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import itertools
import pickle
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

from corepool._protocol import ErrorSite, RemoteError

__all__ = [
    "BY_VALUE_MODULE",
    "MAIN_REFERENCE",
    "PROTOCOL",
    "describe_unpicklable",
    "dumps",
    "dumps_by_value",
    "find_unpicklable",
    "format_exception",
    "in_process_error",
    "loads",
    "main_namespace",
    "needs_by_value",
    "new_main_module",
    "remote_error",
]

PROTOCOL = 5
MAIN_REFERENCE = b"__main__"  # in a pickle: something workers would look up in __main__
BY_VALUE_MODULE = "corepool._transport.by_value"  # what loading a by-value pickle imports

loads = pickle.loads


def main_namespace() -> dict[str, Any]:
    """The namespace that functions of the caller's script share in this process.

    In the parent it is ``__main__`` itself; in a worker, the fresh module
    that ``new_main_module`` installed.
    """
    return sys.modules["__main__"].__dict__


def new_main_module() -> None:
    """Give this worker an empty ``__main__`` for the script's functions to land in.

    Called when a worker starts, whatever started it, and when it is parked,
    so that no pool sees the globals another pool's tasks left behind.
    """
    module = types.ModuleType("__main__")
    sys.modules["__main__"] = module


def dumps_by_value(
    obj: Any, buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None
) -> bytes:
    """Pickle with cloudpickle: lambdas, closures and the script's objects travel by value."""
    # cloudpickle takes ~10 ms to import: a process loads it the first time
    # something must travel by value, not at start-up.
    from corepool._transport import by_value  # noqa: PLC0415

    return by_value.dumps(obj, buffer_callback)


def needs_by_value(data: bytes) -> bool:
    """Whether loading the pickle ``data`` imports cloudpickle (``dumps_by_value`` made it)."""
    return b"cloudpickle" in data


def dumps(obj: Any, *, for_parent: bool = False) -> bytes:
    """Pickle ``obj``; fall back to cloudpickle for lambdas and ``__main__`` objects.

    ``for_parent``: a worker sends ``obj`` to the parent, whose ``__main__`` is
    the script itself, so a reference to it stands (and keeps a class of the
    script the very class the parent's ``except`` and ``isinstance`` name).
    """
    try:
        data = pickle.dumps(obj, PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        return dumps_by_value(obj)
    # A reference to __main__ cannot be resolved by a worker: resend by value.
    # The check is a byte search, far cheaper than the pickling itself.
    if MAIN_REFERENCE in data and not for_parent:
        return dumps_by_value(obj)
    return data


def qualified_type_name(obj: object) -> str:
    cls = type(obj)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _dumps_exception(exc: BaseException) -> bytes:
    """Pickle ``exc`` for the parent as Python itself pickles exceptions.

    A library may register reducers for every exception type with
    ``copyreg`` (tblib does, as ``dask.distributed`` imports it), and some
    rebuild an exception without its ``__init__`` (a ``SystemExit`` then
    loses its ``code``): those are left out here. The traceback travels as
    text anyway.
    """
    table = {
        kind: reducer
        for kind, reducer in copyreg.dispatch_table.items()
        if not (isinstance(kind, type) and issubclass(kind, BaseException))
        and kind is not types.TracebackType
    }
    stream = io.BytesIO()
    pickler = pickle.Pickler(stream, PROTOCOL)
    pickler.dispatch_table = table
    try:
        pickler.dump(exc)
    except (pickle.PicklingError, TypeError, AttributeError):
        from corepool._transport import by_value  # noqa: PLC0415  # see dumps_by_value

        return by_value.dumps_exception(exc, table)
    return stream.getvalue()


def format_exception(exc: BaseException) -> str:
    """``exc`` and its traceback, as Python prints them."""
    # traceback loads on the first error: a worker starts 2 ms sooner without it.
    import traceback  # noqa: PLC0415

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def remote_error(exc: BaseException, site: ErrorSite = ErrorSite.TASK) -> RemoteError:
    """Package ``exc`` to cross back to the parent, even when it will not pickle.

    The exception is pickled and unpickled here, so that a type that pickles
    but cannot be rebuilt (an ``__init__`` with required arguments, say) is
    caught on this side, where its traceback is still at hand.
    """
    text = format_exception(exc)
    problem = ""
    payload: bytes | None = None
    try:
        payload = _dumps_exception(exc)
    except Exception as failure:
        problem = f"it will not pickle: {qualified_type_name(failure)}: {failure}"
    else:
        try:
            loads(payload)
        except Exception as failure:
            payload = None
            problem = f"it pickles but will not unpickle: {qualified_type_name(failure)}: {failure}"
    return RemoteError(
        type_name=qualified_type_name(exc),
        message=str(exc),
        traceback_text=text,
        exception=payload,
        site=site,
        problem=problem,
    )


def in_process_error(exc: BaseException) -> RemoteError:
    """Package ``exc`` for a caller in this same process: the exception itself, as it is."""
    return RemoteError(
        type_name=qualified_type_name(exc),
        message=str(exc),
        traceback_text=format_exception(exc),
        exception=None,
        site=ErrorSite.TASK,
        problem="",
        live=exc,
    )


_MAX_DEPTH = 8
_MAX_CHILDREN = 1000


def find_unpicklable(obj: Any, path: str) -> tuple[str, Any] | None:
    """The path (from ``path``) and the value of the innermost part of ``obj`` that will not pickle.

    Looks into containers, instance attributes, and a function's closure,
    referenced globals and defaults, as cloudpickle sends them. ``None`` if
    every part pickles alone (the whole may still fail).
    """
    try:
        dumps(obj)
    except Exception:
        pass
    else:
        return None
    return _innermost(obj, path, 0, set())


def _innermost(obj: Any, path: str, depth: int, seen: set[int]) -> tuple[str, Any]:
    if depth < _MAX_DEPTH and id(obj) not in seen:
        seen.add(id(obj))
        for child_path, child in itertools.islice(_children(obj, path), _MAX_CHILDREN):
            try:
                dumps(child)
            except Exception:
                return _innermost(child, child_path, depth + 1, seen)
    return path, obj


def _children(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    """The parts of ``obj`` that pickling it would pickle, each with its path."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield f"{path}[{key!r}]", value
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            yield f"{path}[{index}]", value
    elif isinstance(obj, (set, frozenset)):
        for value in obj:
            yield f"{path} item {value!r}", value
    elif isinstance(obj, types.FunctionType):
        for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or (), strict=False):
            with contextlib.suppress(ValueError):  # an empty cell
                yield f"{path} (closure variable {name!r})", cell.cell_contents
        for name in obj.__code__.co_names:
            if name in obj.__globals__:
                yield f"{path} (global {name!r})", obj.__globals__[name]
        for index, default in enumerate(obj.__defaults__ or ()):
            yield f"{path} (default {index})", default
    else:
        attributes = getattr(obj, "__dict__", None)
        if isinstance(attributes, dict):
            for name, value in attributes.items():
                yield f"{path}.{name}", value
        for name in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, name):
                yield f"{path}.{name}", getattr(obj, name)


def describe_unpicklable(obj: Any, path: str) -> str:
    """`` (at args[1].conn, a _thread.lock)``: where ``obj`` fails to pickle, or ``""``."""
    found = find_unpicklable(obj, path)
    if found is None or found[0] == path:
        return ""
    where, culprit = found
    return f" (at {where}, a {qualified_type_name(culprit)})"
