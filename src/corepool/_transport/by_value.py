"""What travels by value: cloudpickle, with the caller's script as one namespace.

Runs in the parent and in workers, imported on first use by ``pickling``
(cloudpickle takes ~10 ms to import; a pool whose functions and arguments
all pickle by reference never pays it). See ``pickling`` for when an object
travels by value.

Functions of the caller's script (``__main__``) sent by value all land in
one namespace per worker, as if the script were a module imported there:
an initializer's ``global`` is seen by every task, a module-level cache is
shared by every function of the script. A global the namespace already has
keeps its value there (the first function to arrive brings it, later ones
do not overwrite it), as a module's globals keep theirs after import.
"""

from __future__ import annotations

import collections
import io
import pickle
import types
from collections.abc import Callable
from typing import Any

import cloudpickle
from cloudpickle import cloudpickle as _cloudpickle_internals

from corepool._transport.pickling import PROTOCOL, main_namespace

__all__ = ["dumps", "dumps_exception"]


def _set_main_function_state(func: types.FunctionType, state: tuple[Any, Any]) -> None:
    """cloudpickle's function state, except that globals the namespace has are kept."""
    attributes, slots = state
    namespace = func.__globals__
    for name, value in slots.pop("__globals__").items():
        namespace.setdefault(name, value)
    slots["__globals__"] = {}
    _cloudpickle_internals._function_setstate(func, (attributes, slots))


class _MainNamespace:
    """Stands for the caller's ``__main__`` namespace in a pickle: ``main_namespace()`` there."""

    def __reduce__(self) -> tuple[Callable[[], dict[str, Any]], tuple[()]]:
        return main_namespace, ()


_MAIN_NAMESPACE = _MainNamespace()


class _CodeOfCloudpickle:
    """A code object that pickles as cloudpickle pickles it (see ``_code_keeping_its_file``)."""

    def __init__(self, code: types.CodeType) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        assert _cloudpickle_code_reduce is not None  # else _Pickler never makes one
        reduced: tuple[Any, ...] = _cloudpickle_code_reduce(self.code)
        return reduced


def _code_in_file(code: types.CodeType, filename: str) -> types.CodeType:
    """``code`` as compiled from ``filename``, so that tracebacks show its source lines."""
    return code.replace(co_filename=filename)


def _code_keeping_its_file(code: types.CodeType) -> tuple[Any, ...]:
    """Pickle ``code`` by value as cloudpickle does, but keep its file name.

    cloudpickle names every function it sends by value ``<dynamic-code>``, so
    a remote traceback through the script's functions shows no source line;
    the worker, on the same machine, can read the script's file itself.
    """
    return _code_in_file, (_CodeOfCloudpickle(code), code.co_filename)


_cloudpickle_code_reduce = getattr(cloudpickle.cloudpickle, "_code_reduce", None)


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, with the script's functions bound to the receiver's ``main_namespace()``.

    Code sent by value keeps its file name (see ``_code_keeping_its_file``).
    """

    if _cloudpickle_code_reduce is not None:
        dispatch_table = collections.ChainMap(
            {types.CodeType: _code_keeping_its_file}, cloudpickle.Pickler.dispatch_table
        )

    def _dynamic_function_reduce(self, func: types.FunctionType) -> tuple[Any, ...]:
        reduced: tuple[Any, ...] = super()._dynamic_function_reduce(func)
        if func.__globals__ is not main_namespace():
            return reduced
        make, (code, _, name, defaults, closure), state = reduced[:3]
        newargs = (code, _MAIN_NAMESPACE, name, defaults, closure)
        return (make, newargs, state, None, None, _set_main_function_state)


def dumps(obj: Any, buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None) -> bytes:
    """``obj`` pickled by value: lambdas, closures and the script's objects included."""
    stream = io.BytesIO()
    _Pickler(stream, PROTOCOL, buffer_callback=buffer_callback).dump(obj)
    return stream.getvalue()


def dumps_exception(exc: BaseException, table: dict[Any, Any]) -> bytes:
    """``exc`` pickled by value (it holds lambdas, say), with ``table`` for copyreg's."""
    stream = io.BytesIO()
    pickler = _Pickler(stream, PROTOCOL)
    own = getattr(cloudpickle.cloudpickle, "_dispatch_table", {})
    code = {types.CodeType: _code_keeping_its_file} if _cloudpickle_code_reduce else {}
    pickler.dispatch_table = collections.ChainMap(code, own, table)
    pickler.dump(exc)
    return stream.getvalue()
