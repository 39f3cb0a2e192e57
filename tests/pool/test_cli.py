"""The command line, run as a user runs it (tests/demo runs the demo's scenarios)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import corepool


def _corepool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corepool.cli", *args],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
        cwd=cwd,
    )


def test_demo_draws_progress_bars_on_stderr(tmp_path: Path) -> None:
    done = _corepool("demo", "--scale", "0.05", "--workers", "2", "--only", "stocks", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "map(analyse_day)" in done.stderr
    assert (tmp_path / "corepool-demo.png").exists()  # the chart's default place


def test_demo_refuses_an_unknown_scenario_and_names_the_known_ones() -> None:
    done = _corepool("demo", "--only", "images,mandelbrot")
    assert done.returncode == 2
    assert done.stderr == (
        "corepool demo: --only names unknown scenarios mandelbrot; choose from images, "
        "stocks, scraper, webserver, toolbox, pains\n"
    )


def test_demo_refuses_a_bad_scale() -> None:
    done = _corepool("demo", "--scale", "-1")
    assert done.returncode == 2
    assert "--scale must be one of small, default, large or a number > 0, got '-1'" in done.stderr


def test_version() -> None:
    done = _corepool("--version")
    assert done.stdout.strip() == corepool.__version__
