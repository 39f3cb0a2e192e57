"""Stock-transaction analysis: VWAP and volume per symbol and day over millions of trades.

The tutorial's "massive dataset": trades stored as Parquet, one partition
per trading day, each analysed on its own and the answers joined. The
trades are generated here (random walks per symbol), nothing is
downloaded. Needs pyarrow and pandas (``pip install 'corepool[parquet]'``).
"""

from __future__ import annotations

import multiprocessing
import tempfile
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import corepool
from corepool._demo.common import DemoConfig, Row, check_agree, scaled, timed, warm_up

SCENARIO = "stock-transaction analysis"
TRADES = 4_000_000
DAYS = 40
SYMBOLS = [f"SYM{i:03}" for i in range(200)]
FIRST_DAY = date(2026, 1, 5)


# -- the task ---------------------------------------------------------------------


def analyse_day(path: Path) -> pd.DataFrame:
    """One day's trades: VWAP, volume, trade count, high and low per symbol."""
    trades = pd.read_parquet(path)
    trades["notional"] = trades["price"] * trades["volume"]
    day = trades.groupby("symbol", observed=True).agg(
        volume=("volume", "sum"),
        notional=("notional", "sum"),
        trades=("price", "size"),
        high=("price", "max"),
        low=("price", "min"),
    )
    day["vwap"] = day["notional"] / day["volume"]
    day.insert(0, "day", path.parent.name.removeprefix("day="))
    return day.drop(columns="notional").reset_index()


def make_trades(folder: Path, trades: int, days: int, seed: int = 13) -> list[Path]:
    """Write ``trades`` random trades as one Parquet partition per day; their paths."""
    rng = np.random.default_rng(seed)
    per_day = trades // days
    opening = rng.uniform(10, 500, len(SYMBOLS))
    paths = []
    for offset in range(days):
        symbols = rng.integers(0, len(SYMBOLS), per_day)
        drift = rng.normal(0, 0.002, per_day)
        prices = opening[symbols] * np.exp(drift)
        table = pa.table(
            {
                "symbol": pd.Categorical.from_codes(symbols, SYMBOLS),
                "second": np.sort(rng.integers(0, 6 * 3600 + 1800, per_day)),
                "price": prices.round(2),
                "volume": rng.integers(1, 50, per_day) * 100,
            }
        )
        folder_for_day = folder / f"day={FIRST_DAY + timedelta(days=offset)}"
        folder_for_day.mkdir()
        paths.append(folder_for_day / "trades.parquet")
        pq.write_table(table, paths[-1])
    return paths


# -- serial, the standard library, corepool ---------------------------------------


def analyse_serially(paths: list[Path]) -> pd.DataFrame:
    """The loop a pool replaces."""
    return pd.concat([analyse_day(path) for path in paths], ignore_index=True)


def run(config: DemoConfig) -> list[Row]:
    """Write the trades, then time the three ways of analysing them."""
    days = scaled(DAYS, config.scale, least=config.workers * 2)
    trades = scaled(TRADES, config.scale, least=days * 1000)
    with tempfile.TemporaryDirectory(prefix="corepool-demo-trades-") as folder:
        paths = make_trades(Path(folder), trades, days)
        serial_s, expected = timed(lambda: analyse_serially(paths))
        with multiprocessing.Pool(config.workers) as mp_pool:
            stdlib_s, stdlib = timed(
                lambda: pd.concat(mp_pool.map(analyse_day, paths), ignore_index=True)
            )
        with corepool.Pool(config.workers) as pool:
            warm_up(pool, __name__, config.workers, config.progress)
            ours_s, ours = timed(
                lambda: pd.concat(
                    pool.map(analyse_day, paths, progress=config.progress), ignore_index=True
                )
            )
    check_agree(
        SCENARIO,
        _Frame(expected),
        {"multiprocessing.Pool": _Frame(stdlib), "corepool.Pool": _Frame(ours)},
    )
    title = f"{SCENARIO} ({trades / 1e6:.1f}M trades, {days} days)"
    return [
        Row(title, "serial loop", serial_s, baseline=True),
        Row(title, "multiprocessing.Pool", stdlib_s),
        Row(title, "corepool.Pool", ours_s, versus="multiprocessing.Pool"),
    ]


class _Frame:
    """A DataFrame compared by content, as ``check_agree`` compares answers."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Frame) and bool(self.frame.equals(other.frame))

    __hash__ = None  # type: ignore[assignment]  # mutable content, as a DataFrame's
