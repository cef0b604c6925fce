"""Time lrexp.core.tables.read_table against plain pyarrow on the same CSV and Parquet files.

    python scripts/bench_load.py [--rows 1000000] [--repeats 3]

Writes a rows × 11 float64 table (10 features and a target) to a temporary directory as CSV and
Parquet, then prints the median of three timings of each reader (the two readers alternate)
and the ratio to pyarrow's.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lrexp.core.tables import read_table

COLUMNS = [f"x{j}" for j in range(1, 11)] + ["y"]


def median_times(fns: list[Callable[[], object]], repeats: int = 3) -> list[float]:
    """Return each function's median wall time over ``repeats`` interleaved rounds."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):  # interleaved, so that a busy spell on the machine hits both
        for fn, acc in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    """Write the files, time both readers on each, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (the median is shown)")
    args = parser.parse_args()
    values = np.random.default_rng(0).normal(size=(args.rows, len(COLUMNS)))
    table = pa.table(dict(zip(COLUMNS, values.T, strict=True)))
    with tempfile.TemporaryDirectory(prefix="lrexp-bench-load-") as tmp:
        csv_path, pq_path = Path(tmp) / "t.csv", Path(tmp) / "t.parquet"
        pacsv.write_csv(table, csv_path)
        pq.write_table(table, pq_path)
        rows = [
            ("csv", csv_path, lambda: pacsv.read_csv(csv_path), "pyarrow.csv.read_csv"),
            ("parquet", pq_path, lambda: pq.read_table(pq_path), "pyarrow.parquet.read_table"),
        ]
        print(f"{args.rows} rows x {len(COLUMNS)} float64 columns; median of {args.repeats} runs")
        print(f"{'format':8} {'MB':>7} {'baseline':>27} {'s':>7} {'read_table s':>13} {'ratio':>6}")
        for fmt, path, baseline, name in rows:
            reader = functools.partial(read_table, path, target="y")
            base, ours = median_times([baseline, reader], args.repeats)
            mb = path.stat().st_size / 1e6
            print(f"{fmt:8} {mb:7.1f} {name:>27} {base:7.3f} {ours:13.3f} {ours / base:6.2f}")


if __name__ == "__main__":
    main()
