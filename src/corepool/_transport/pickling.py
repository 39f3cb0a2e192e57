"""Pickling that works for whatever a task sends, as fast as plain pickle when it can.

Runs in the parent and in every worker. Plain pickle (protocol 5) is tried
first; objects that it cannot pickle, or that it would pickle by a reference
to ``__main__`` (which workers never import), go through cloudpickle, which
sends them by value.
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any

import cloudpickle

from corepool._protocol import ErrorSite, RemoteError

__all__ = ["MAIN_REFERENCE", "PROTOCOL", "dumps", "dumps_function", "loads", "remote_error"]

PROTOCOL = 5
MAIN_REFERENCE = b"__main__"  # in a pickle: something workers would look up in __main__

loads = pickle.loads


def dumps(obj: Any) -> bytes:
    """Pickle ``obj``; fall back to cloudpickle for lambdas and ``__main__`` objects."""
    try:
        data = pickle.dumps(obj, PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        return bytes(cloudpickle.dumps(obj, PROTOCOL))
    # A reference to __main__ cannot be resolved by a worker: resend by value.
    # The check is a byte search, far cheaper than the pickling itself.
    if MAIN_REFERENCE in data:
        return bytes(cloudpickle.dumps(obj, PROTOCOL))
    return data


def dumps_function(fn: Any) -> bytes:
    """Pickle a task's function: by reference when importable, else by value."""
    return bytes(cloudpickle.dumps(fn, PROTOCOL))


def qualified_type_name(obj: object) -> str:
    cls = type(obj)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def remote_error(exc: BaseException, site: ErrorSite = ErrorSite.TASK) -> RemoteError:
    """Package ``exc`` to cross back to the parent, even when it will not pickle.

    The exception is pickled and unpickled here, so that a type that pickles
    but cannot be rebuilt (an ``__init__`` with required arguments, say) is
    caught on this side, where its traceback is still at hand.
    """
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    problem = ""
    payload: bytes | None = None
    try:
        payload = dumps(exc)
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
