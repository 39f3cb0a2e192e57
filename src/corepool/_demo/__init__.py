"""``corepool demo``: the seed tutorial's scenarios, serial vs the standard library vs corepool.

One module per scenario (images, stocks, scraper, webserver, toolbox,
pains), each reading as the tutorial would write it; ``runner`` picks and
runs them, ``common`` holds what they share, ``report`` turns their rows
into a table and a chart. Runs in the parent process; uses corepool's
public API only.
"""

from __future__ import annotations

from corepool._demo.common import DemoConfig, Row
from corepool._demo.runner import SCENARIOS, parse_scale, run_demo, select

__all__ = ["SCENARIOS", "DemoConfig", "Row", "parse_scale", "run_demo", "select"]
