"""Progress bars: tasks done, rate and time left, drawn by tqdm on stderr.

Runs in the caller's thread. tqdm is imported only when a bar is asked for.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__all__ = ["ProgressBar"]


class ProgressBar:
    """A bar counting finished tasks of one call.

    Args:
        description: The text before the bar, such as ``"map(resize)"``.
        total: How many tasks the call has, or ``None`` for an unsized input
            (the bar then shows the count and rate without a time left).
    """

    def __init__(self, description: str, total: int | None) -> None:
        # A notebook's widget bar where IPython runs; the terminal's elsewhere.
        # (tqdm.auto would import IPython to find out: 100+ ms when it is installed.)
        module = "tqdm.auto" if "IPython" in sys.modules else "tqdm"
        tqdm = importlib.import_module(module).tqdm  # only when a bar is asked for
        self._bar: Any = tqdm(total=total, desc=description, unit="task", dynamic_ncols=True)

    def update(self, tasks: int) -> None:
        """Count ``tasks`` more as done."""
        self._bar.update(tasks)

    def close(self, summary: str | None = None) -> None:
        """Draw the final state and release the terminal line; then print ``summary``."""
        self._bar.close()
        if summary is not None:
            self._bar.write(summary, file=sys.stderr)
