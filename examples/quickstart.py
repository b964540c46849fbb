"""Quickstart: three partner lists and a voter file, from hashing to each partner's own matched rows.

    python examples/quickstart.py [--workdir DIR] [--voters N] [--list-size N]

1. generate a synthetic voter file and three noisy partner lists;
2. every organization gets an identity; one consortium key is made here for
   brevity (a real coalition agrees on it by the key ceremony, see
   examples/coalition_walkthrough.md);
3. each organization hashes its list into a signed bundle, keeping its vault;
4. the broker verifies the bundles, matches them against the voter file and
   writes a protected report and one release of handles per partner;
5. the coordinator reads the report (tables and a plot);
6. each partner resolves its release into its own rows, locally.

Everything goes to a temporary folder unless --workdir is given.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cleanroom import (
    BrokerState,
    Policy,
    create_identity,
    hash_file,
    init_consortium,
    load_identity,
    load_spec,
    match_job,
    new_key,
    resolve_release,
)
from cleanroom import analysis as ca
from cleanroom.cli.broker import print_report
from cleanroom.synth import generate_partners, generate_voters, write_frame

PASSPHRASE = b"quickstart passphrase (use a real one)"
PARTNERS = ["Tenants Union", "Teachers Local 12", "Transit Riders"]
ATTRIBUTES = ["county", "state_house_district", "precinct", "party"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--voters", type=int, default=20_000)
    parser.add_argument("--list-size", type=int, default=2_500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cleanroom-quickstart-") as tmp:
        run(args.workdir or Path(tmp), args.voters, args.list_size)


def run(work: Path, n_voters: int, list_size: int) -> None:
    started = time.perf_counter()

    # 1. Data: a voter file and three partner lists (with typos, nicknames, moves...).
    voters = generate_voters(n_voters, seed=7)
    lists, _truth = generate_partners(voters, len(PARTNERS), sizes=list_size, seed=7, names=PARTNERS)
    write_frame(voters, work / "voters.parquet")
    for name, frame in lists.items():
        write_frame(frame, work / f"{name}.csv")
    print(f"1. generated {voters.height:,} voters and {len(lists)} lists of about {list_size:,} rows")

    # 2. Identities (signing + key agreement) and the consortium's shared key.
    orgs = {name: work / "orgs" / name for name in ["Voter File", *PARTNERS, "Broker"]}
    for name, folder in orgs.items():
        create_identity(name, folder / "identity", PASSPHRASE)
    ids = {name: load_identity(folder / "identity", PASSPHRASE) for name, folder in orgs.items()}
    key = new_key("quickstart", epoch=1)
    policy = Policy(k=10, epsilon_budget=5.0, epsilon_per_report=0.5, clear_attributes=tuple(ATTRIBUTES))
    consortium = init_consortium("quickstart", ids["Voter File"], [ids[p].card for p in PARTNERS],
                                 work / "consortium.json", epoch=1, policy=policy)

    # 3. Each organization hashes its own list; the vault (handle -> row) stays with it.
    spec = load_spec()
    hash_file(work / "voters.parquet", orgs["Voter File"] / "bundle", orgs["Voter File"] / "vault",
              key=key, identity=ids["Voter File"], spec=spec, reference=True,
              attributes={a: a for a in ATTRIBUTES}, id_column="voter_id")
    for name in PARTNERS:
        hash_file(work / f"{name}.csv", orgs[name] / "bundle", orgs[name] / "vault",
                  key=key, identity=ids[name], spec=spec)
    print("3. hashed and signed 4 bundles (no plaintext leaves an organization)")

    # 4. The broker: verify, match, protect, release.
    broker = BrokerState(orgs["Broker"] / "state", ids["Broker"])
    report, releases = match_job(
        [orgs["Voter File"] / "bundle"], [orgs[p] / "bundle" for p in PARTNERS], work / "job",
        state=broker, consortium=consortium, crosstabs=[["state_house_district", "party"]],
    )
    print(f"4. match job {report.job_id}: protected report and {len(releases)} releases")

    # 5. The coordinator's view: protected tables and plots (no handles, no names).
    print_report(report, limit=8)
    rates = ca.match_rates(report)
    print(rates)
    figure = ca.save_figure(ca.plot_upset(report), work / "overlap_upset.png")
    print(f"5. wrote {figure.name}")

    # 6. Each partner turns its own release into its own rows, at home.
    for name in PARTNERS:
        folder = next(p for p in (work / "job" / "releases").iterdir()
                      if p.name.endswith(ids[name].card.fingerprint[:8]))
        rows = resolve_release(folder, orgs[name] / "vault", work / f"{name}.csv", broker=ids["Broker"].card)
        print(f"6. {name}: {rows.height:,} of its {lists[name].height:,} rows matched the voter file")
    print(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
