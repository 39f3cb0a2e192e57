"""The demo's table and chart, made from the scenarios' rows.

Runs in the parent process. Imports matplotlib only to draw the chart, and
says how to install it when it is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from corepool._demo.common import Row

__all__ = ["draw_chart", "table"]

_COLUMNS = ("scenario", "runner", "seconds", "vs serial", "vs stdlib", "note")


def _speedups(rows: list[Row]) -> list[tuple[str, str]]:
    """For each row: its speedup over its scenario's serial row, and over its stdlib row."""
    seconds = {(row.scenario, row.runner): row.seconds for row in rows}
    serial = {row.scenario: row.seconds for row in rows if row.baseline}
    cells = []
    for row in rows:
        base = serial.get(row.scenario)
        over_serial = "" if base is None else f"{_ratio(base, row.seconds):.2f}x"
        stdlib = seconds.get((row.scenario, row.versus or ""))
        over_stdlib = "" if stdlib is None else f"{_ratio(stdlib, row.seconds):.2f}x"
        cells.append((over_serial, over_stdlib))
    return cells


def _ratio(before: float, after: float) -> float:
    return before / after if after > 0 else float("inf")


def table(rows: list[Row]) -> str:
    """The rows as a text table: seconds, speedup over serial, corepool over the stdlib."""
    lines = [
        (row.scenario, row.runner, f"{row.seconds:.3f}", over_serial, over_stdlib, row.note)
        for row, (over_serial, over_stdlib) in zip(rows, _speedups(rows), strict=True)
    ]
    widths = [max(len(line[i]) for line in [_COLUMNS, *lines]) for i in range(len(_COLUMNS))]
    right = {2, 3, 4}

    def render(cells: tuple[str, ...]) -> str:
        text = "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )
        return text.rstrip()

    out = [render(_COLUMNS)]
    previous = ""
    for line in lines:
        shown = line if line[0] != previous else ("", *line[1:])
        if line[0] != previous and previous:
            out.append("")
        previous = line[0]
        out.append(render(shown))
    return "\n".join(out)


def draw_chart(rows: list[Row], path: Path) -> str:
    """Draw each row's speedup over serial as a bar in a PNG at ``path``; one line to print."""
    if importlib.util.find_spec("matplotlib") is None:
        return "chart: not drawn, matplotlib is not installed: pip install 'corepool[charts]'"
    import matplotlib  # noqa: PLC0415  # optional: the corepool[charts] extra

    matplotlib.use("Agg")  # a file, never a window
    from matplotlib import pyplot  # noqa: PLC0415

    serial = {row.scenario: row.seconds for row in rows if row.baseline}
    shown = [row for row in rows if row.scenario in serial and not row.baseline]
    labels = [f"{row.scenario}: {row.runner}" for row in shown]
    speedups = [_ratio(serial[row.scenario], row.seconds) for row in shown]
    colors = ["tab:green" if row.runner.startswith("corepool") else "tab:gray" for row in shown]
    figure, axes = pyplot.subplots(figsize=(10, 1.2 + 0.32 * len(shown)))
    try:
        axes.barh(range(len(shown)), speedups, color=colors)
        axes.set_yticks(range(len(shown)), labels, fontsize=8)
        axes.invert_yaxis()
        axes.axvline(1.0, color="black", linewidth=0.8)
        axes.set_xlabel("speedup over the serial loop (green: corepool, gray: standard library)")
        axes.set_title("corepool demo")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
    finally:
        pyplot.close(figure)
    return f"chart: {path}"
