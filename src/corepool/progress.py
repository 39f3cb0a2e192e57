"""Progress bars: tasks done, rate and time left, drawn by tqdm on stderr.

Runs in the caller's thread. tqdm is imported only when a bar is asked for.
"""

from __future__ import annotations

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
        from tqdm.auto import tqdm  # noqa: PLC0415  # only when a bar is asked for

        self._bar: Any = tqdm(total=total, desc=description, unit="task", dynamic_ncols=True)

    def update(self, tasks: int) -> None:
        """Count ``tasks`` more as done."""
        self._bar.update(tasks)

    def close(self) -> None:
        """Draw the final state and release the terminal line."""
        self._bar.close()
