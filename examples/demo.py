"""End-to-end demo on generated data: key ceremony, hashing, verification, matching.

    python examples/demo.py [--workdir DIR] [--voters N] [--list-size N]

Four organizations (a voter-file custodian and three partners) agree on a
consortium key through a directory relay, each hashes its list into a signed
bundle, and every bundle is verified and checked to be from the same epoch.
A neutral broker then matches the partner bundles against the voter file and
prints the protected report (small cells suppressed, counts noised) and the
size of each partner's release of its own handles.
Everything is written to a temporary folder unless --workdir is given.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cleanroom import (
    BrokerState,
    Policy,
    create_identity,
    hash_file,
    load_identity,
    load_key,
    load_spec,
    match_job,
    verify_bundle,
)
from cleanroom.cli.broker import print_report
from cleanroom.keys.ceremony import contribute, finish
from cleanroom.keys.consortium import accept_consortium, init_consortium, load_consortium, require_same_epoch
from cleanroom.keys.relay import DirectoryRelay
from cleanroom.synth import generate_partners, generate_voters, write_frame

PASSPHRASE = b"demo passphrase (use a real one)"
CUSTODIAN = "County Voter File"
PARTNERS = ["Riverside Tenants Union", "Eastside Teachers", "Transit Riders Alliance"]
VOTER_ATTRIBUTES = ["county", "congressional_district", "state_house_district", "precinct", "party"]

console = Console()


def broker_match(work: Path, key_files: dict[str, Path]) -> None:
    """The broker (not a consortium member, never holds the key) matches and reports."""
    create_identity("Neutral Broker", work / "broker" / "identity", PASSPHRASE)
    state = BrokerState(work / "broker" / "state", load_identity(work / "broker" / "identity", PASSPHRASE))
    report, releases = match_job(
        [key_files[CUSTODIAN].parent / "bundle"],
        [key_files[name].parent / "bundle" for name in PARTNERS],
        work / "broker" / "jobs" / "first-match",
        state=state,
        consortium=load_consortium(work / "consortium.json"),
        crosstabs=[["state_house_district", "party"]],
    )
    print_report(report, limit=8)
    for name, manifest in releases.items():
        console.print(f"release for {name}: {manifest.rows:,} of its own handles (signed by the broker)")


def ceremony(work: Path) -> dict[str, Path]:
    """Identities, consortium document, contributory key; returns each org's key file."""
    names = [CUSTODIAN, *PARTNERS]
    folders = {name: work / "orgs" / name.lower().replace(" ", "-") for name in names}
    for name, folder in folders.items():
        create_identity(name, folder / "identity", PASSPHRASE)
    identities = {name: load_identity(folders[name] / "identity", PASSPHRASE) for name in names}
    relay = DirectoryRelay(work / "relay")
    consortium = init_consortium(
        "riverside-recall-2026",
        identities[CUSTODIAN],
        [identities[n].card for n in PARTNERS],
        work / "consortium.json",
        policy=Policy(clear_attributes=tuple(VOTER_ATTRIBUTES)),
    )
    for identity in identities.values():
        accept_consortium(consortium, identity, relay)
    for identity in identities.values():
        contribute(consortium, identity, relay)
    key_files = {name: folders[name] / "consortium.key" for name in names}
    for _ in range(2):  # first pass publishes fingerprints, second writes key files
        results = [finish(consortium, identities[n], relay, key_files[n]) for n in names]
    assert all(r.complete for r in results) and len({r.key_fingerprint for r in results}) == 1
    console.print(f"key ceremony: {len(names)} members agree on key {results[0].key_fingerprint}")
    return key_files


def _bundle_table(manifests: list) -> Table:
    """Rows with a token per match key (one column per organization)."""
    table = Table("", *[m.producer.name for m in manifests], title="signed bundles: rows with a token")
    table.add_row("kind", *[m.kind for m in manifests])
    table.add_row("rows", *[f"{m.row_count:,}" for m in manifests])
    for i, key in enumerate(manifests[0].keys):
        table.add_row(key.name, *[f"{m.keys[i].non_null:,}" for m in manifests])
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--voters", type=int, default=50_000)
    parser.add_argument("--list-size", type=int, default=8_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cleanroom-demo-") as tmp:
        work = args.workdir or Path(tmp)
        started = time.perf_counter()
        voters = generate_voters(args.voters, seed=2026)
        lists, _truth = generate_partners(voters, len(PARTNERS), sizes=args.list_size, seed=2026, names=PARTNERS)
        write_frame(voters, work / "data" / "voters.parquet")
        for name, frame in lists.items():
            write_frame(frame, work / "data" / f"{name}.csv")
        console.print(f"generated a voter file of {voters.height:,} rows and {len(lists)} partner lists")

        key_files = ceremony(work)
        spec = load_spec()
        jobs = {CUSTODIAN: (work / "data" / "voters.parquet", True)}
        jobs |= {name: (work / "data" / f"{name}.csv", False) for name in PARTNERS}
        manifests = []
        for name, (source, reference) in jobs.items():
            org = key_files[name].parent
            hash_file(
                source, org / "bundle", org / "vault",
                key=load_key(key_files[name]), identity=load_identity(org / "identity", PASSPHRASE),
                spec=spec, reference=reference,
                attributes={a: a for a in VOTER_ATTRIBUTES} if reference else None,
                id_column="voter_id" if reference else None,
            )
            manifest = verify_bundle(org / "bundle")
            manifests.append(manifest)
        require_same_epoch(
            (m.producer.name, m.consortium_id, m.epoch, m.key_fingerprint) for m in manifests
        )
        console.print(_bundle_table(manifests))
        console.print(
            f"all {len(manifests)} bundles verified: signed, digests intact, same consortium, "
            f"epoch and key ({time.perf_counter() - started:.1f} s)"
        )
        broker_match(work, key_files)
        console.print(f"match job done ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
