"""Hash throughput and peak memory: cleanroom's full hash path vs a plain DuckDB pipeline.

    python benchmarks/hash_throughput.py --rows 1000000

Generates N synthetic contacts as Parquet in a temporary folder, then runs, each
in its own process (so peak RSS is per pipeline):
  * cleanroom: `hash_file` with three keyed match keys (email; phone;
    first+last+dob) and the full normalization, writing a signed bundle;
  * duckdb: sha256(salt || lower(trim(x))) for the same three keys, written to Parquet.
Prints contacts/s, peak RSS and the throughput ratio. Not a test: run by hand
and record the figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

SPEC = """
name = "benchmark-three-keys"
[[keys]]
name = "email"
fields = ["email"]
[[keys]]
name = "phone"
fields = ["phone"]
[[keys]]
name = "name_dob"
fields = ["first", "last", "dob"]
"""

DUCKDB_SQL = """
COPY (
  SELECT sha256('{salt}' || lower(trim(email))) AS email,
         sha256('{salt}' || lower(trim(phone))) AS phone,
         sha256('{salt}' || lower(trim(first_name)) || '|' || lower(trim(last_name)) || '|' || trim(dob)) AS name_dob
  FROM read_parquet('{source}')
) TO '{target}' (FORMAT parquet)
"""


def make_contacts(n: int, path: Path, seed: int = 7) -> None:
    """N contacts with realistic repetition in names and zips (vectorized)."""
    from cleanroom.synth import FIRST_NAMES, LAST_NAMES  # frequency-ranked name tables

    rng = np.random.default_rng(seed)
    firsts = np.array(FIRST_NAMES)[np.minimum(rng.zipf(1.3, n) - 1, len(FIRST_NAMES) - 1)]
    lasts = np.array(LAST_NAMES)[np.minimum(rng.zipf(1.2, n) - 1, len(LAST_NAMES) - 1)]
    providers = np.array(["gmail.com", "yahoo.com", "outlook.com", "icloud.com", "comcast.net"])
    frame = pl.DataFrame({"first_name": firsts, "last_name": lasts}).with_columns(
        email=pl.concat_str(
            pl.col("first_name"), pl.lit("."), pl.col("last_name"),
            pl.Series(rng.integers(0, 10_000, n)).cast(pl.String), pl.lit("@"),
            pl.Series(providers[rng.integers(0, len(providers), n)]),
        ),
        phone=pl.concat_str(pl.lit("(503) 555-"), pl.Series(rng.integers(0, 10_000, n)).cast(pl.String).str.zfill(4)),
        dob=(pl.lit(np.datetime64("1940-01-01")) + pl.duration(days=pl.Series(rng.integers(0, 25_000, n)))).dt.strftime("%m/%d/%Y"),
        zip=pl.Series(rng.integers(97000, 97999, n)).cast(pl.String),
    )
    frame.write_parquet(path)


def run_cleanroom(source: Path, work: Path) -> None:
    from cleanroom import create_identity, hash_file, load_identity, new_key
    from cleanroom.spec import MatchSpec
    import tomllib

    create_identity("benchmark", work / "id", b"benchmark")
    hash_file(
        source, work / "bundle", work / "vault",
        key=new_key("bench"), identity=load_identity(work / "id", b"benchmark"),
        spec=MatchSpec.model_validate(tomllib.loads(SPEC)),
    )


def run_duckdb(source: Path, work: Path) -> None:
    import duckdb

    duckdb.sql(DUCKDB_SQL.format(salt="s3cr3t-salt", source=source, target=work / "duck.parquet"))


def measure(pipeline: str, source: Path, work: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one pipeline run in a fresh process."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, "--run", pipeline, "--input", str(source), "--work", str(work)])
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{pipeline} failed")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--run", choices=["cleanroom", "duckdb"])
    parser.add_argument("--input", type=Path)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.run:
        {"cleanroom": run_cleanroom, "duckdb": run_duckdb}[args.run](args.input, args.work)
        return
    with tempfile.TemporaryDirectory(prefix="cleanroom-bench-") as tmp:
        folder = Path(tmp)
        source = folder / "contacts.parquet"
        make_contacts(args.rows, source)
        results = {}
        for pipeline in ("cleanroom", "duckdb"):
            (folder / pipeline).mkdir()
            results[pipeline] = measure(pipeline, source, folder / pipeline)
        for pipeline, (seconds, peak) in results.items():
            print(f"{pipeline:10s} {args.rows / seconds:>12,.0f} contacts/s  {seconds:7.2f} s  peak RSS {peak:,.0f} MB")
        ratio = results["duckdb"][0] / results["cleanroom"][0]
        print(f"throughput ratio cleanroom/duckdb: {ratio:.2f} (process start-up included in both)")


if __name__ == "__main__":
    main()
