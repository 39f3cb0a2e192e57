"""corepool as a joblib parallel backend: ``Parallel`` and scikit-learn's ``n_jobs`` on corepool.

For example:

    import corepool.joblib
    from joblib import Parallel, delayed, parallel_config

    corepool.joblib.register()
    with parallel_config(backend="corepool", n_jobs=-1):
        squares = Parallel()(delayed(square)(x) for x in range(1000))
        scores = cross_val_score(model, X, y, n_jobs=-1)   # scikit-learn, on corepool

joblib stays optional: this module imports it only when ``register()`` is
called or ``CorepoolBackend`` is first used, never at ``import corepool``.
The backend itself lives in ``corepool._joblib_backend``, which imports
joblib at its top.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corepool._joblib_backend import CorepoolBackend

__all__ = ["BACKEND_NAME", "CorepoolBackend", "register"]

BACKEND_NAME = "corepool"


def register(*, make_default: bool = False) -> None:
    """Register corepool as joblib's parallel backend ``"corepool"``.

    Afterwards ``joblib.parallel_config(backend="corepool")`` (or the older
    ``parallel_backend``) runs ``Parallel`` calls, and scikit-learn's
    ``n_jobs``, on corepool worker processes. Calling it again does no harm.

    Args:
        make_default: Also make ``"corepool"`` joblib's default backend, so
            that every ``Parallel`` call of this process runs on corepool
            outside any ``parallel_config`` block too.

    Raises:
        ImportError: joblib is not installed (``pip install corepool[joblib]``).

    Example:
        >>> corepool.joblib.register()
        >>> with joblib.parallel_config(backend="corepool", n_jobs=2):
        ...     joblib.Parallel()(joblib.delayed(abs)(-x) for x in range(3))
        [0, 1, 2]
    """
    backend = _backend_class()  # imports joblib, or says how to install it
    joblib = importlib.import_module("joblib")
    joblib.register_parallel_backend(BACKEND_NAME, backend, make_default=make_default)


def _backend_class() -> type[CorepoolBackend]:
    """``CorepoolBackend``, importing joblib (and the backend's module) on first use."""
    try:
        module = importlib.import_module("corepool._joblib_backend")
    except ImportError as exc:
        if exc.name is None or not exc.name.startswith("joblib"):
            raise
        raise ImportError(
            "corepool's joblib backend needs joblib, which is not installed here. "
            "Install it with: pip install 'corepool[joblib]'"
        ) from exc
    backend: type[CorepoolBackend] = module.CorepoolBackend
    return backend


def __getattr__(name: str) -> Any:
    # CorepoolBackend subclasses joblib's backend base class: load it (and
    # joblib) only when it is asked for.
    if name == "CorepoolBackend":
        backend = _backend_class()
        globals()[name] = backend
        return backend
    raise AttributeError(f"module 'corepool.joblib' has no attribute {name!r}")
