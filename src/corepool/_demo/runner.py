"""Pick the demo's scenarios, run each, and hand the rows to the report.

Runs in the parent process (the ``corepool demo`` command). Imports each
scenario module only when it runs, once its libraries are known to be
installed, so a missing extra skips one scenario instead of the demo.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from corepool._demo import report
from corepool._demo.common import DemoConfig, Row

SCALES = {"small": 0.1, "default": 1.0, "large": 4.0}


@dataclass(frozen=True)
class Scenario:
    """A scenario module, the libraries it needs and the extra that installs them."""

    name: str
    summary: str
    needs: tuple[str, ...] = ()
    extra: str = ""


SCENARIOS = (
    Scenario("images", "batch image resize", ("PIL",), "images"),
    Scenario("stocks", "stock-transaction analysis", ("pyarrow", "pandas", "numpy"), "parquet"),
    Scenario("scraper", "web scraper over a local HTTP server"),
    Scenario("webserver", "a worker pool behind a web server"),
    Scenario("toolbox", "task and result queues, a pipe, a counter under a lock"),
    Scenario("pains", "the pains: a killed worker, a big array, Ctrl-C, tiny tasks"),
)


def parse_scale(text: str) -> float:
    """``small``, ``default``, ``large`` or a positive number: the factor on every input size."""
    if text in SCALES:
        return SCALES[text]
    try:
        scale = float(text)
    except ValueError:
        scale = 0.0
    if not scale > 0:
        names = ", ".join(SCALES)
        raise ValueError(f"--scale must be one of {names} or a number > 0, got {text!r}")
    return scale


def select(only: Sequence[str]) -> list[Scenario]:
    """The scenarios named in ``only`` (each a name or a comma list), or all of them."""
    names = [name.strip() for entry in only for name in entry.split(",") if name.strip()]
    known = {scenario.name: scenario for scenario in SCENARIOS}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"--only names unknown scenarios {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    return [scenario for scenario in SCENARIOS if not names or scenario.name in names]


def missing_extra(scenario: Scenario) -> str | None:
    """One line saying what to install, if a library ``scenario`` needs is missing."""
    missing = [name for name in scenario.needs if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (
        f"{scenario.name}: skipped, {', '.join(missing)} not installed: "
        f"pip install 'corepool[{scenario.extra}]'"
    )


def run_demo(
    config: DemoConfig,
    scenarios: Sequence[Scenario],
    chart: Path | None,
    out: Callable[[str], None],
) -> list[Row]:
    """Run ``scenarios``, print their table with ``out`` and draw the chart at ``chart``."""
    rows: list[Row] = []
    for scenario in scenarios:
        skipped = missing_extra(scenario)
        if skipped:
            out(skipped)
            continue
        out(f"{scenario.name}: {scenario.summary} ...")
        module = importlib.import_module(f"corepool._demo.{scenario.name}")
        rows.extend(module.run(config))
    out("")
    out(report.table(rows))
    if chart is not None and rows:
        out(report.draw_chart(rows, chart))
    return rows
