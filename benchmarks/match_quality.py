"""Match quality of the broker's cascade on synthetic data with ground truth.

    python benchmarks/match_quality.py [--spec SPEC.toml] [--profile default|hard]
        [--mode cascade|score] [--full-coverage] [--voters N] [--lists M] [--size N] [--seed S]

Generates a voter file and partner lists (cleanroom.synth), hashes them through
the real hash path under one key, runs the broker's match, and scores the
match table against the ground truth (cleanroom.evaluate): precision, recall
and F1 overall and per rule. Record the figures in docs/matching.md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import polars as pl
from rich.console import Console

from cleanroom import create_identity, hash_file, load_identity, load_spec, new_key
from cleanroom.broker.engine import run_match
from cleanroom.broker.load import load_inputs
from cleanroom.evaluate import evaluate
from cleanroom.synth import generate_partners, generate_voters, write_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path)
    parser.add_argument("--profile", default="default", choices=["default", "hard"])
    parser.add_argument("--voters", type=int, default=30_000)
    parser.add_argument("--lists", type=int, default=3)
    parser.add_argument("--size", type=int, default=4_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--mode", default="cascade", choices=["cascade", "score"])
    parser.add_argument("--full-coverage", action="store_true",
                        help="every partner row has an address and a birth date (record-linkage benchmark style)")
    args = parser.parse_args()
    spec, key = load_spec(args.spec), new_key("quality")
    voters = generate_voters(args.voters, seed=args.seed)
    coverage = {"address_shares": (1.0,), "dob_shares": (1.0,)} if args.full_coverage else None
    lists, truth = generate_partners(
        voters, args.lists, sizes=args.size, seed=args.seed, profile=args.profile, noise=coverage
    )
    with tempfile.TemporaryDirectory(prefix="cleanroom-quality-") as tmp:
        work = Path(tmp)

        def bundle(name: str, source: Path, **options) -> None:
            create_identity(name, work / "id" / name, b"pw")
            hash_file(source, work / "b" / name, work / "v" / name, key=key, spec=spec,
                      identity=load_identity(work / "id" / name, b"pw"), **options)

        write_frame(voters, work / "voters.parquet")
        bundle("voter-file", work / "voters.parquet", reference=True, id_column="voter_id")
        for name, frame in lists.items():
            write_frame(frame, work / f"{name}.csv")
            bundle(name, work / f"{name}.csv")
        outcome = run_match(
            load_inputs([work / "b" / "voter-file"], [work / "b" / n for n in lists]), mode=args.mode
        )
        vaults = {n: pl.read_parquet(work / "v" / n / "vault.parquet") for n in lists}
        result = evaluate(outcome.match_table(), truth, vaults,
                          pl.read_parquet(work / "v" / "voter-file" / "vault.parquet"))
    Console(width=140).print(result.render())


if __name__ == "__main__":
    main()
