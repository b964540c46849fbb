"""Hash throughput and peak memory: cleanroom's full hash path vs a plain DuckDB pipeline.

    python benchmarks/hash_throughput.py --rows 1000000 [--repeat 3]

Generates N synthetic contacts as Parquet in a temporary folder, then runs, each
in its own process (so peak RSS is per pipeline):
  * cleanroom: `hash_file` with three keyed match keys (email; phone;
    first+last+dob) and the full normalization, writing a signed bundle; as in
    `cleanroom hash`, the compiled kernels load (about 0.4 s) while the
    identity is unlocked (scrypt, about 0.4 s), before the timed pipeline;
  * duckdb: sha256(salt || lower(trim(x))) for the same three keys, written to Parquet.
Prints contacts/s, peak RSS and the throughput ratio; with --repeat N the
pipelines run N times, alternating, and the medians are reported (a shared
machine is noisy). Not a test: run by hand and record the figures in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
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
    """N contacts drawn from a synthetic voter file, with an email per person."""
    from cleanroom.synth import generate_voters

    rng = np.random.default_rng(seed)
    providers = np.array(["gmail.com", "yahoo.com", "outlook.com", "icloud.com", "comcast.net"])
    voters = generate_voters(n, seed=seed)
    contacts = voters.select(
        email=pl.concat_str(
            pl.col("first_name"), pl.lit("."), pl.col("last_name"),
            pl.Series(rng.integers(0, 1000, n)).cast(pl.String), pl.lit("@"),
            pl.Series(providers[rng.integers(0, len(providers), n)]),
        ),
        phone="phone", first_name="first_name", last_name="last_name", dob="dob", zip="zip",
    )
    contacts.write_parquet(path)


def run_cleanroom(source: Path, work: Path) -> float:
    import tomllib

    from cleanroom import create_identity, hash_file, load_identity, new_key
    from cleanroom.hashing import warm_up
    from cleanroom.spec import MatchSpec

    create_identity("benchmark", work / "id", b"benchmark")
    warm_up()  # as `cleanroom hash` does: the kernels load while the identity is unlocked
    identity = load_identity(work / "id", b"benchmark")
    start = time.perf_counter()
    hash_file(
        source, work / "bundle", work / "vault",
        key=new_key("bench"), identity=identity, spec=MatchSpec.model_validate(tomllib.loads(SPEC)),
    )
    return time.perf_counter() - start


def run_duckdb(source: Path, work: Path) -> float:
    import duckdb

    start = time.perf_counter()
    duckdb.sql(DUCKDB_SQL.format(salt="s3cr3t-salt", source=source, target=work / "duck.parquet"))
    return time.perf_counter() - start


def measure(pipeline: str, source: Path, work: Path) -> tuple[float, float, float]:
    """Pipeline seconds, whole-process seconds and peak RSS (MB) of one run in a fresh process."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, __file__, "--run", pipeline, "--input", str(source), "--work", str(work)],
        stdout=subprocess.PIPE, text=True,
    )
    inner = float(child.stdout.read())
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{pipeline} failed")
    return inner, elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per pipeline; medians are reported")
    parser.add_argument("--run", choices=["make", "cleanroom", "duckdb"])
    parser.add_argument("--input", type=Path)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.run == "make":
        make_contacts(args.rows, args.input)
        return
    if args.run:
        print({"cleanroom": run_cleanroom, "duckdb": run_duckdb}[args.run](args.input, args.work))
        return
    with tempfile.TemporaryDirectory(prefix="cleanroom-bench-") as tmp:
        folder = Path(tmp)
        source = folder / "contacts.parquet"
        # generated in a child process: a forked child's peak RSS counts the parent's pages
        subprocess.run(
            [sys.executable, __file__, "--run", "make", "--rows", str(args.rows), "--input", str(source)], check=True
        )
        runs: dict[str, list[tuple[float, float, float]]] = {"cleanroom": [], "duckdb": []}
        for i in range(args.repeat):
            for pipeline, done in runs.items():
                work = folder / f"{pipeline}-{i}"
                work.mkdir()
                done.append(measure(pipeline, source, work))
                shutil.rmtree(work)
        results = {pipeline: tuple(statistics.median(x) for x in zip(*done)) for pipeline, done in runs.items()}
        for pipeline, (inner, whole, peak) in results.items():
            print(
                f"{pipeline:10s} {args.rows / inner:>12,.0f} contacts/s  pipeline {inner:6.2f} s  "
                f"process {whole:6.2f} s  peak RSS {peak:,.0f} MB"
            )
        ratio = results["duckdb"][0] / results["cleanroom"][0]
        print(f"throughput ratio cleanroom/duckdb (pipeline time): {ratio:.2f}")


if __name__ == "__main__":
    main()
