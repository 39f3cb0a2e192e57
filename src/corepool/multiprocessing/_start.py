"""The start method of ``corepool.multiprocessing``: which one is the default, and setting it.

Runs in the caller. Imports only ``corepool.options``. The stdlib keeps this
state in its default context; here it is one module-level variable so that
``Pool``, ``Process`` and the contexts read the same answer.
"""

from __future__ import annotations

from corepool.options import START_METHODS, StartMethod, default_start_method

__all__ = ["check_method", "get_all_start_methods", "get_start_method", "set_start_method"]

_chosen: list[StartMethod] = []  # empty until set or first asked for


def check_method(method: str | None) -> StartMethod:
    """``method`` if corepool has it, else the default; ``ValueError`` for an unknown name."""
    if method is None:
        return get_start_method()
    for known in START_METHODS:
        if method == known:
            return known
    raise ValueError(
        f"cannot find context for {method!r}: corepool's start methods are "
        f"{', '.join(START_METHODS)}"
    )


def get_start_method(allow_none: bool = False) -> StartMethod:
    """The start method in use; chosen now (the platform's default) if none was set.

    Args:
        allow_none: Return ``None`` instead of choosing, when none was set.
    """
    if not _chosen:
        if allow_none:
            return None  # type: ignore[return-value]  # the stdlib's contract
        _chosen.append(default_start_method())
    return _chosen[0]


def set_start_method(method: str | None, force: bool = False) -> None:
    """Set the start method of ``Pool`` and ``Process`` made without a context.

    Raises:
        RuntimeError: A start method was set or used already, and ``force`` is false.
        ValueError: ``method`` is not one of corepool's start methods.
    """
    if _chosen and not force:
        raise RuntimeError(
            f"context has already been set (to {_chosen[0]!r}); "
            "pass force=True to change it, or use get_context(method) instead"
        )
    _chosen.clear()
    if method is not None:
        _chosen.append(check_method(method))


def get_all_start_methods() -> list[str]:
    """The start methods corepool offers, the default first."""
    default = default_start_method()
    return [default, *(method for method in START_METHODS if method != default)]
