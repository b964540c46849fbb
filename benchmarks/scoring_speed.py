"""Speed, memory and quality of matching at scale (scored by default, or the cascade).

    python benchmarks/scoring_speed.py --voters 1000000 --size 1000000 [--spec examples/scored_spec.toml]
        [--mode score|cascade] [--overlap 0.3] [--profile hard|default] [--keep DIR]

Generates a voter file and one partner list (hard profile with full field
coverage, or with `--profile default` the default profile as generated),
drawn from a pool of people 1/overlap times the list's size, 80% of them
voters as far as the file holds them: with a file the list's size, 30% of the
list is registered at the default overlap 0.3, 80% at 1.0. Hashes both with
the spec through the real hash path (timed separately), then times the
bundles' verification and, apart, the match: scoring + one-to-one linking (the
cascade with `--mode cascade` and a cascade spec) + person resolution, in a
fresh process, and reports its peak RSS,
then (untimed) the links' precision and recall against the generator's ground
truth. With `--keep DIR` the hashed bundles stay in DIR (one folder per size,
overlap, profile and spec) and a later run with the same options reuses them
instead of hashing again. Record the figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from cleanroom import create_identity, hash_file, load_identity, load_spec, new_key
from cleanroom.broker.engine import run_match
from cleanroom.broker.load import load_inputs
from cleanroom.evaluate import evaluate
from cleanroom.synth import generate_partners, generate_voters, write_frame

SPEC = Path(__file__).parent.parent / "examples" / "scored_spec.toml"


def build(work: Path, voters: int, size: int, spec: Path, overlap: float, profile: str) -> None:
    key, scored = new_key("speed"), load_spec(spec)
    people = generate_voters(voters, seed=1)
    coverage = {"address_shares": (1.0,), "dob_shares": (1.0,)} if profile == "hard" else None
    lists, truth = generate_partners(people, 1, sizes=size, seed=1, profile=profile, overlap=overlap, noise=coverage)
    write_frame(people, work / "voters.parquet")
    next(iter(truth.values())).write_parquet(work / "truth.parquet")
    write_frame(next(iter(lists.values())), work / "partner.parquet")
    for name, source, reference in (("voters", "voters.parquet", True), ("partner", "partner.parquet", False)):
        create_identity(name, work / "id" / name, b"pw")
        start = time.perf_counter()
        hash_file(work / source, work / "b" / name, work / "v" / name, key=key, spec=scored,
                  identity=load_identity(work / "id" / name, b"pw"), reference=reference,
                  id_column="voter_id" if reference else None)
        print(f"hash {name:8s} {time.perf_counter() - start:7.1f} s")


def score(work: Path, mode: str) -> tuple[float, float]:
    start = time.perf_counter()
    inputs = load_inputs([work / "b" / "voters"], [work / "b" / "partner"])
    verified = time.perf_counter()
    outcome = run_match(inputs, mode=mode)
    elapsed = verified - start, time.perf_counter() - verified
    links = outcome.match_table()
    quality = evaluate(links, {"partner": pl.read_parquet(work / "truth.parquet")},
                       {"partner": pl.read_parquet(work / "v" / "partner" / "vault.parquet")},
                       pl.read_parquet(work / "v" / "voters" / "vault.parquet")).overall
    print(f"links {links.height:,}: precision {quality.precision:.4f}, recall {quality.recall:.4f}", file=sys.stderr)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voters", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--spec", type=Path, default=SPEC)
    parser.add_argument("--mode", choices=["score", "cascade"], default="score")
    parser.add_argument("--overlap", type=float, default=0.3)
    parser.add_argument("--profile", choices=["hard", "default"], default="hard")
    parser.add_argument("--keep", type=Path, help="keep the hashed bundles in this folder and reuse them")
    parser.add_argument("--build-only", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--score-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:
        build(args.build_only, args.voters, args.size, args.spec, args.overlap, args.profile)
        return
    if args.score_only:
        print(*score(args.score_only, args.mode))
        return
    if args.keep:
        spec = f"{args.spec.stem}-{load_spec(args.spec).digest()[:8]}"  # an edited spec is hashed again
        work = args.keep / f"{args.voters}x{args.size}-{args.overlap}-{args.profile}-{spec}"
        if not (work / "b" / "partner").exists():
            shutil.rmtree(work, ignore_errors=True)
            _build(work, args)
        _time(work, args.mode)
        return
    with tempfile.TemporaryDirectory(prefix="cleanroom-scoring-") as tmp:
        _build(Path(tmp), args)
        _time(Path(tmp), args.mode)


def _build(work: Path, args: argparse.Namespace) -> None:
    """Generate and hash in a separate process, so its memory is not counted against scoring."""
    subprocess.run([sys.executable, __file__, "--build-only", str(work), "--voters", str(args.voters),
                    "--size", str(args.size), "--spec", str(args.spec), "--overlap", str(args.overlap),
                    "--profile", args.profile], check=True)


def _time(work: Path, mode: str) -> None:
    child = subprocess.Popen([sys.executable, __file__, "--score-only", str(work), "--mode", mode],
                             stdout=subprocess.PIPE, text=True)
    verify, match = (float(s) for s in child.stdout.read().split())
    _, status, usage = os.wait4(child.pid, 0)
    if status:
        raise SystemExit("scoring failed")
    print(f"verify {verify:.1f} s + score + link {match:.1f} s = {verify + match:.1f} s  "
          f"peak RSS {usage.ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
