"""``corepool demo``: each scenario at a small scale, answers checked against the serial run.

Timings are not checked (the machine may be busy); each scenario's ``run``
raises when a pool's answer differs from the serial loop's. The autouse
fixture in tests/conftest.py fails a scenario that leaves a server, a pool
process or a shared-memory segment behind.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from corepool._demo import SCENARIOS, DemoConfig, Row, parse_scale, report, runner, select

SMALL = DemoConfig(scale=0.05, workers=2, progress=False)


def _run(name: str) -> list[Row]:
    module = importlib.import_module(f"corepool._demo.{name}")
    rows: list[Row] = module.run(SMALL)
    return rows


def _runners(rows: list[Row], scenario_start: str) -> list[str]:
    return [row.runner for row in rows if row.scenario.startswith(scenario_start)]


def test_images_and_stocks_agree_serial_stdlib_corepool() -> None:
    for name, title in (("images", "batch image resize"), ("stocks", "stock-transaction")):
        rows = _run(name)
        assert [row.runner for row in rows] == [
            "serial loop",
            "multiprocessing.Pool",
            "corepool.Pool",
        ]
        assert rows[0].scenario.startswith(title) and rows[0].baseline
        assert rows[2].versus == "multiprocessing.Pool"


def test_scraper_fetches_from_its_own_server_process_on_threads_and_processes() -> None:
    rows = _run("scraper")
    assert [row.runner for row in rows] == [
        "serial loop",
        "ThreadPoolExecutor",
        'corepool.Pool(backend="thread")',
        "multiprocessing.Pool",
        "corepool.Pool",
    ]
    assert rows[2].versus == "ThreadPoolExecutor" and rows[4].versus == "multiprocessing.Pool"


def test_webserver_serves_a_bounded_load_three_ways() -> None:
    rows = _run("webserver")
    assert [row.runner for row in rows] == [
        "work in the handler thread",
        "multiprocessing.Pool",
        "corepool.Pool",
    ]
    for row in rows:
        assert "req/s, p50 " in row.note and " ms, p99 " in row.note


def test_toolbox_queues_pipe_and_counter_are_exact() -> None:
    rows = _run("toolbox")
    assert len(rows) == 9
    assert rows[-1].note == "total 2,000, exact"  # 2 workers x 1,000 increments


def test_pains_killed_worker_big_array_ctrl_c_tiny_tasks() -> None:
    rows = _run("pains")
    killed = {row.runner: row.note for row in rows if row.scenario.startswith("a worker killed")}
    assert killed["multiprocessing.Pool"].startswith("hung: no answer after 3 s")
    assert killed["corepool.Pool"] == (
        "returned 199 results; lost only item 120 (WorkerDied, SIGKILL)"
    )
    assert _runners(rows, "a 4 MB numpy array") == [
        "serial loop",
        "multiprocessing.Pool",
        "corepool.Pool",
        "corepool.Pool(shared=...)",
    ]
    ctrl_c = [row for row in rows if row.scenario.startswith("Ctrl-C")]
    assert [row.note for row in ctrl_c] == ["nothing left running"] * 2
    assert _runners(rows, "tasks too small")[0] == "serial loop"


def test_only_takes_names_repeated_or_comma_separated() -> None:
    chosen = select(["images,stocks", "pains"])
    assert [scenario.name for scenario in chosen] == ["images", "stocks", "pains"]
    assert [scenario.name for scenario in select([])] == [s.name for s in SCENARIOS]
    with pytest.raises(ValueError, match=r"--only names unknown scenarios imgs; choose from imag"):
        select(["imgs"])


def test_scale_takes_names_and_numbers() -> None:
    assert parse_scale("small") == 0.1 and parse_scale("0.5") == 0.5
    with pytest.raises(ValueError, match=r"--scale must be one of small, default, large"):
        parse_scale("huge")


def test_a_missing_library_skips_its_scenario_with_the_extra_to_install() -> None:
    scenario = runner.Scenario("photos", "x", ("no_such_module_13",), "images")
    assert runner.missing_extra(scenario) == (
        "photos: skipped, no_such_module_13 not installed: pip install 'corepool[images]'"
    )


def _rows() -> list[Row]:
    return [
        Row("job", "serial loop", 2.0, baseline=True),
        Row("job", "multiprocessing.Pool", 1.0),
        Row("job", "corepool.Pool", 0.5, "a note", versus="multiprocessing.Pool"),
    ]


def test_table_shows_speedup_over_serial_and_over_the_stdlib() -> None:
    lines = report.table(_rows()).splitlines()
    assert lines[0].split() == [
        "scenario",
        "runner",
        "seconds",
        "vs",
        "serial",
        "vs",
        "stdlib",
        "note",
    ]
    assert lines[2].split() == ["multiprocessing.Pool", "1.000", "2.00x"]
    assert lines[3].split() == ["corepool.Pool", "0.500", "4.00x", "2.00x", "a", "note"]


def test_chart_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "demo.png"
    assert report.draw_chart(_rows(), path) == f"chart: {path}"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_one_line_says_how_to_get_the_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report.importlib.util, "find_spec", lambda name: None)
    line = report.draw_chart(_rows(), tmp_path / "demo.png")
    assert line == "chart: not drawn, matplotlib is not installed: pip install 'corepool[charts]'"
    assert not (tmp_path / "demo.png").exists()


def test_corepool_demo_prints_the_table_and_draws_the_chart(tmp_path: Path) -> None:
    chart = tmp_path / "chart.png"
    done = subprocess.run(
        [sys.executable, "-m", "corepool.cli", "demo", "--scale", "small", "--only", "toolbox",
         "--workers", "2", "--no-progress", "--chart", str(chart)],
        capture_output=True, text=True, timeout=50, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0] == "corepool 0.1.0 demo: 2 workers; each pool is started before its clock starts"
    assert "toolbox: task and result queues, a pipe, a counter under a lock ..." in out
    header = next(line for line in out if line.startswith("scenario"))
    assert header.split()[:3] == ["scenario", "runner", "seconds"]
    assert any(line.startswith("task queue -> result queue (2,000 tasks") for line in out)
    assert sum("corepool  " in line for line in out) == 3
    assert out[-1] == f"chart: {chart}"
    assert chart.read_bytes()[:4] == b"\x89PNG"
