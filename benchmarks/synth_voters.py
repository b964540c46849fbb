"""Benchmark: generate a synthetic voter file and write it to Parquet.

Reports rows per second and peak resident memory. Target: 13M rows in at most
3 minutes and 8 GB on a 2-core machine.

    python benchmarks/synth_voters.py --rows 13000000
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from cleanroom.synth import generate_voters, write_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=13_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--birth-year-only", action="store_true")
    args = parser.parse_args()

    start = time.perf_counter()
    df = generate_voters(args.rows, seed=args.seed, birth_year_only=args.birth_year_only)
    generated = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "voters.parquet"
        write_frame(df, path)
        total = time.perf_counter() - start
        size = path.stat().st_size
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is KiB on Linux
    print(f"rows            {args.rows:,}")
    print(f"generate        {generated:.1f} s  ({args.rows / generated:,.0f} rows/s)")
    print(f"generate+write  {total:.1f} s  ({args.rows / total:,.0f} rows/s)")
    print(f"parquet size    {size / 1024**2:,.0f} MiB")
    print(f"peak RSS        {peak_gb:.2f} GiB")


if __name__ == "__main__":
    main()
