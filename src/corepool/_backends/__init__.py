"""Backends run chunks of tasks and report what happened to them.

Everything else (jobs, chunking, ordering, progress, error mapping) lives
above, in ``_scheduler``, once for all backends. ``create`` picks the
backend a pool's options name and refuses the options it cannot honour.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping

from corepool._backends.base import Backend
from corepool._backends.local import LocalBackend
from corepool.options import PoolOptions

__all__ = ["create", "refused_options"]


def create(options: PoolOptions) -> Backend:
    """The backend ``options.backend`` names, built from ``options``.

    Raises:
        ValueError: An option is set that this backend cannot honour.
        ImportError: The backend needs an extra that is not installed.
        BackendError: The Dask cluster could not be reached or started.
    """
    if options.backend == "dask":
        # Imported here, not above: only a Dask pool may import dask (slow, optional).
        try:
            dask_backend = importlib.import_module("corepool._backends.dask")
        except ModuleNotFoundError as exc:
            if exc.name not in ("dask", "distributed"):
                raise
            raise ImportError(
                f"backend='dask' needs dask.distributed, which is not installed ({exc}). "
                "Install it with: pip install 'corepool[dask]'"
            ) from exc
        _refuse(options, dask_backend.DaskBackend.REFUSED)
        backend: Backend = dask_backend.DaskBackend(options)
        return backend
    if options.backend == "thread":
        # Imported here: it loads the worker side (run_tasks), which a
        # process pool's parent never needs.
        from corepool._backends.threads import ThreadBackend  # noqa: PLC0415

        _refuse(options, ThreadBackend.REFUSED)
        return ThreadBackend(options)
    return LocalBackend(options)


def refused_options(options: PoolOptions, refused: Mapping[str, str]) -> list[str]:
    """The names in ``refused`` whose option differs from its default in ``options``."""
    defaults = {field.name: field.default for field in dataclasses.fields(PoolOptions)}
    return [name for name in refused if getattr(options, name) != defaults[name]]


def _refuse(options: PoolOptions, refused: Mapping[str, str]) -> None:
    names = refused_options(options, refused)
    if names:
        reasons = "; ".join(f"{name}: {refused[name]}" for name in names)
        raise ValueError(
            f"backend={options.backend!r} cannot honour {', '.join(names)} ({reasons}). "
            f"Leave {'it' if len(names) == 1 else 'them'} unset, or use backend='process'."
        )
