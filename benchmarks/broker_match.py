"""Broker match speed and peak memory: cleanroom's engine vs the same joins in DuckDB.

    python benchmarks/broker_match.py                       # 13M reference x 5 partners x 1M
    python benchmarks/broker_match.py --reference-rows 1000000 --partner-rows 100000 --partners 3

Builds, in a temporary folder, one reference bundle (a hashed voter file with
four match keys and clear attributes) and several partner bundles, then runs,
each in its own process (peak RSS from `os.wait4`, as in hash_throughput.py):

  * cleanroom: `load_inputs` with full verification (signatures, BLAKE3 file
    digests, the token pass of `verify_bundle`, consortium checks), `run_match`
    (cascade, person resolution, attributes) and `build_report` (the standard
    tables with the default privacy policy: noise and suppression);
  * duckdb: the same computation in SQL on the same parquet files: per key the
    reference tokens held by one row only (ambiguous ones counted), per partner
    and key the rows whose tokens point to exactly one reference row, the
    first-key-wins cascade with conflict counts, person resolution by the same
    min-label propagation over shared email/phone tokens (not phones the
    reference holds on several rows), and the report counts
    (outcomes per rule, overlap sets and pairs, matched persons per attribute).
    DuckDB gets no verification work.

Prints seconds per phase, peak RSS, the time ratio, and checks that both agree
on the match counts. Not a test: run by hand, record figures in docs/benchmarks.md.

How the inputs are made. Hashing a 13M-row synthetic voter file through
`hash_file` takes minutes, so the bundles are built directly, but as real
bundles: the schema of `cleanroom.bundle`, rows in random (handle) order,
uncompressed parquet in 1M-row groups, manifests signed with
`sign_manifest` by per-organisation identities of one consortium, and tokens
made by `cleanroom.tokens.token_list` with the consortium key's
subkeys from synthetic normalized field strings. Each field string is a
function of an integer value id ("p123@mail.example" for email 123), so equal
ids give equal tokens. Multiplicities follow a voter file:

  * reference (keys email, phone, name_dob, canon_name_zip): email on 65% of
    rows, 5% of those with a second email; 1% of emails shared with another
    row; phone on 70%, 12% shared within households; name+dob on 99% with 0.4%
    collisions; canonical name+zip on 97% with 3% collisions. Shared values make
    ambiguous reference tokens. Attributes county, state_house_district, party,
    age_band (skewed, districts nested in counties), protected to k=10 with
    `cleanroom.attributes.protect_attributes` as `hash_file` does.
  * partners: 70% of rows are reference persons (their values, each key present
    with a partner-typical rate, 5% of values changed, 0.3% of phones pointing
    to another person: conflicts), 30% are unregistered people drawn from one
    pool shared by all partners (so they overlap across lists), and 2% of rows
    duplicate another row of the same list.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

KEYS = {
    "email": ["email"],
    "phone": ["phone"],
    "name_dob": ["first", "last", "dob"],
    "canon_name_zip": ["first_canon", "last", "zip5"],
}
ATTRIBUTES = ["county", "state_house_district", "party", "age_band"]
LINK_KEYS = ["email", "phone"]
CONSORTIUM = "bench-consortium"
EPOCH = 1
PASSPHRASE = b"benchmark"
ROW_GROUP = 1_000_000
SECOND_EMAIL = 1 << 40  # value-id namespaces: reference persons use 0..N-1
FRESH = 1 << 41  # partner values not in the reference
UNREGISTERED = 1 << 42  # persons only on partner lists


# ---------------------------------------------------------------- inputs


def _fields(key: str, ids: pl.Expr) -> list[pl.Expr]:
    """Synthetic normalized field strings of one key for integer value ids."""
    first = pl.format("first{}", ids % 4096)
    last = pl.format("last{}", ids // 4096)
    return {
        "email": lambda: [pl.format("p{}@mail.example", ids)],
        "phone": lambda: [pl.format("+1{}", ids + 2_000_000_000)],
        "name_dob": lambda: [first, last, pl.format("19{}-0{}-1{}", 30 + ids % 70, 1 + ids % 9, ids % 10)],
        "canon_name_zip": lambda: [first, last, (10_000 + ids % 90_000).cast(pl.String)],
    }[key]()


def _tokens(ids: pl.DataFrame, subkeys: dict[str, bytes]) -> pl.DataFrame:
    """Token lists per key from value-id columns (null id = no value); email may have a second id."""
    from cleanroom.tokens import token_list

    lists = {
        key: token_list(
            [_fields(key, pl.col(c)) for c in ids.columns if c == key or c.startswith(key + ":")],
            subkeys[key],
        )
        for key in KEYS
    }
    return ids.lazy().select(**lists).collect(engine="streaming")


def _masked(values: np.ndarray, present: np.ndarray) -> pl.Series:
    return pl.Series(values.astype(np.int64)).set(pl.Series(~present), None)


def _reference_ids(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Value id per reference row and key, with shared values (-1 = no value)."""
    rows = np.arange(n)
    out = {}
    for key, present_p, shared_p, household in (
        ("email", 0.65, 0.01, False),
        ("phone", 0.70, 0.12, True),
        ("name_dob", 0.99, 0.004, False),
        ("canon_name_zip", 0.97, 0.03, False),
    ):
        ids = rows.copy()
        shared = rng.random(n) < shared_p
        donors = rows - rng.integers(1, 4, n) if household else rng.integers(0, n, n)
        ids[shared] = np.clip(donors, 0, n - 1)[shared]
        ids[rng.random(n) >= present_p] = -1
        out[key] = ids
    return out


def _attributes(n: int, rng: np.random.Generator) -> pl.DataFrame:
    counties = 100
    weights = 1.0 / np.arange(1, counties + 1) ** 0.9
    county = rng.choice(counties, n, p=weights / weights.sum())
    district = (county * 7 + rng.integers(0, 1 + county % 5, n)) % 120
    party = rng.choice(5, n, p=[0.36, 0.31, 0.3, 0.02, 0.01])
    age = rng.choice(7, n, p=[0.1, 0.16, 0.17, 0.17, 0.17, 0.13, 0.1])
    return pl.DataFrame({
        "county": pl.Series([f"County {c + 1:03d}" for c in range(counties)])[county],
        "state_house_district": pl.Series([f"HD-{d + 1:03d}" for d in range(120)])[district],
        "party": pl.Series(["DEM", "REP", "UNA", "LIB", "GRE"])[party],
        "age_band": pl.Series(["18-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+"])[age],
    })


def _write_bundle(folder: Path, tokens: pl.DataFrame, *, identity, key, spec, kind: str,
                  attributes: list[str], protection) -> None:
    """tokens.parquet (random row order, uncompressed) and a signed manifest."""
    from cleanroom import normalize
    from cleanroom.bundle import (
        TOKENS_FILE,
        KeyInfo,
        Manifest,
        file_digest,
        sign_manifest,
    )
    from cleanroom.tokens import unpacked

    folder.mkdir(parents=True)
    table = pl.from_arrow(unpacked(tokens)).sort("handle").to_arrow()
    with pq.ParquetWriter(folder / TOKENS_FILE, table.schema, compression="none", store_schema=False) as writer:
        for start in range(0, table.num_rows, ROW_GROUP):
            writer.write_table(table.slice(start, ROW_GROUP))
    non_null = tokens.select(pl.col(k).is_not_null().sum() for k in KEYS).row(0, named=True)
    manifest = Manifest(
        kind=kind, consortium_id=key.consortium_id, epoch=key.epoch, key_fingerprint=key.fingerprint,
        spec_name=spec.name, spec_digest=spec.digest(), normalizer_versions=normalize.versions(),
        row_count=tokens.height,
        keys=[KeyInfo(name=k, fields=f, non_null=non_null[k]) for k, f in KEYS.items()],
        attributes=attributes, attribute_protection=protection,
        tokens_digest=file_digest(folder / TOKENS_FILE), producer=identity.card,
    )
    sign_manifest(folder, manifest, identity)


def build_inputs(work: Path, n_ref: int, n_partner: int, partners: int, seed: int = 5) -> None:
    """Reference and partner bundles plus a consortium document under `work`."""
    from cleanroom import create_identity, load_identity, new_key
    from cleanroom.attributes import protect_attributes
    from cleanroom.keys.consortium import Policy, init_consortium
    from cleanroom.spec import MatchKey, MatchSpec
    from cleanroom.tokens import random_handles, subkeys

    rng = np.random.default_rng(seed)
    spec = MatchSpec(name="benchmark-four-keys", keys=[MatchKey(name=k, fields=f) for k, f in KEYS.items()],
                     allowed_attributes=ATTRIBUTES)
    key = new_key(CONSORTIUM, epoch=EPOCH)
    secret = subkeys(key, list(KEYS))
    names = ["Voter File", *[f"Partner {i + 1}" for i in range(partners)]]
    ids = {}
    for name in names:
        create_identity(name, work / "id" / name, PASSPHRASE)
        ids[name] = load_identity(work / "id" / name, PASSPHRASE)
    init_consortium(CONSORTIUM, ids["Voter File"], [ids[n].card for n in names[1:]], work / "consortium.json",
                    epoch=EPOCH, policy=Policy(k=10, clear_attributes=tuple(ATTRIBUTES),
                                               match_spec_digest=spec.digest()))

    ref_ids = _reference_ids(n_ref, rng)
    second = (ref_ids["email"] >= 0) & (rng.random(n_ref) < 0.05)
    columns = {k: _masked(v, v >= 0) for k, v in ref_ids.items()}
    columns["email:2"] = _masked(SECOND_EMAIL + np.arange(n_ref), second)
    tokens = _tokens(pl.DataFrame(columns), secret)
    attrs, protection = protect_attributes(_attributes(n_ref, rng), ATTRIBUTES, 10)
    frame = pl.concat([random_handles(n_ref).to_frame(), tokens, attrs], how="horizontal")
    _write_bundle(work / "bundles" / "reference", frame, identity=ids["Voter File"], key=key, spec=spec,
                  kind="reference", attributes=ATTRIBUTES, protection=protection)
    del tokens, frame, attrs, columns

    n_reg = round(0.7 * n_partner)
    n_unreg = n_partner - n_reg
    pool = max(n_unreg, int(2.5 * n_unreg))
    rates = {"email": 0.85, "phone": 0.6, "name_dob": 0.5, "canon_name_zip": 0.55}
    for p, name in enumerate(names[1:]):
        persons = rng.choice(n_ref, n_reg, replace=False)
        unreg = rng.choice(pool, n_unreg, replace=False)
        columns = {}
        for k, rate in rates.items():
            values = np.concatenate([ref_ids[k][persons], UNREGISTERED + unreg])
            if k == "phone":
                conflict = np.flatnonzero(rng.random(n_reg) < 0.003)
                values[conflict] = ref_ids[k][rng.integers(0, n_ref, conflict.size)]
            fresh = (values < 0) | (rng.random(n_partner) < 0.05)
            values[fresh] = (FRESH + (p << 32) + np.arange(n_partner) * len(KEYS) + list(KEYS).index(k))[fresh]
            columns[k] = (values, rng.random(n_partner) < rate)
        dup = np.flatnonzero(rng.random(n_partner) < 0.02)
        source = rng.integers(0, n_partner, dup.size)
        for values, present in columns.values():
            values[dup], present[dup] = values[source], present[source]
        frame = pl.DataFrame({k: _masked(v, m) for k, (v, m) in columns.items()})
        frame = pl.concat([random_handles(n_partner).to_frame(), _tokens(frame, secret)], how="horizontal")
        _write_bundle(work / "bundles" / f"partner-{p + 1}", frame, identity=ids[name], key=key, spec=spec,
                      kind="partner", attributes=[], protection=None)


def _bundles(work: Path) -> tuple[Path, list[Path]]:
    partners = sorted((work / "bundles").glob("partner-*"), key=lambda p: int(p.name.split("-")[1]))
    return work / "bundles" / "reference", partners


# ---------------------------------------------------------------- pipelines


def run_cleanroom(work: Path) -> dict:
    from cleanroom.broker.engine import run_match
    from cleanroom.broker.load import load_inputs
    from cleanroom.broker.reports import build_report
    from cleanroom.keys.consortium import load_consortium
    from cleanroom.privacy import PrivacyPolicy

    reference, partners = _bundles(work)
    consortium = load_consortium(work / "consortium.json")
    times = {}
    start = time.perf_counter()
    inputs = load_inputs([reference], partners, consortium)
    times["verify"] = time.perf_counter() - start
    outcome = run_match(inputs, k=10)
    times["match"] = time.perf_counter() - start - times["verify"]
    report = build_report(outcome, job_id="benchmark", consortium_id=CONSORTIUM, epoch=EPOCH,
                          policy=PrivacyPolicy())
    times["total"] = time.perf_counter() - start
    times["report"] = times["total"] - times["verify"] - times["match"]
    names = {p.name: f"partner-{i + 1}" for i, p in enumerate(inputs.partners)}
    matched = {
        names[p]: {k: s.matched for k, s in stats.items()} for p, stats in outcome.key_stats.items()
    }
    conflicts = {
        names[p]: {k: s.conflicts for k, s in stats.items()} for p, stats in outcome.key_stats.items()
    }
    persons = outcome.rows.select(
        pl.col("person").n_unique().alias("all"), pl.col("person").filter("registered").n_unique().alias("registered")
    )
    return {
        "times": times, "matched": matched, "conflicts": conflicts, "ambiguous": outcome.ambiguous,
        "persons": list(persons.row(0)), "tables": len(report.tables),
    }


def run_duckdb(work: Path) -> dict:
    import duckdb

    reference, partners = _bundles(work)
    con = duckdb.connect()
    keys = list(KEYS)
    start = time.perf_counter()
    ref = f"read_parquet('{reference / 'tokens.parquet'}', file_row_number = true)"
    ref_long = " UNION ALL ".join(
        f"SELECT {r} AS rank, unnest({k}) AS token, file_row_number AS ref_idx FROM {ref}"
        for r, k in enumerate(keys)
    )
    con.execute(f"""
        CREATE TEMP TABLE ref_held AS
        SELECT rank, token, any_value(ref_idx) AS ref_idx, count(*) AS holders
        FROM (SELECT DISTINCT rank, token, ref_idx FROM ({ref_long}) WHERE token IS NOT NULL)
        GROUP BY rank, token""")
    ambiguous = dict(con.execute(
        "SELECT rank, count(*) FILTER (WHERE holders > 1) FROM ref_held GROUP BY rank").fetchall())
    con.execute("CREATE TEMP TABLE ref_unique AS SELECT rank, token, ref_idx FROM ref_held WHERE holders = 1")
    # phones held by several reference rows are household lines and link no persons
    con.execute(f"CREATE TEMP TABLE shared_lines AS SELECT token FROM ref_held "
                f"WHERE holders > 1 AND rank = {keys.index('phone')}")
    con.execute("DROP TABLE ref_held")
    part_long = " UNION ALL ".join(
        f"SELECT {pi} AS partner, {r} AS rank, unnest({k}) AS token, file_row_number AS p_idx "
        f"FROM read_parquet('{p / 'tokens.parquet'}', file_row_number = true)"
        for pi, p in enumerate(partners) for r, k in enumerate(keys)
    )
    con.execute(f"""
        CREATE TEMP TABLE part_tok AS
        SELECT DISTINCT partner, rank, token, p_idx FROM ({part_long}) WHERE token IS NOT NULL""")
    con.execute("""
        CREATE TEMP TABLE hits AS
        SELECT partner, p_idx, rank, any_value(ref_idx) AS ref_idx, count(*) AS targets
        FROM (SELECT DISTINCT t.partner, t.p_idx, t.rank, u.ref_idx
              FROM part_tok t JOIN ref_unique u USING (rank, token))
        GROUP BY partner, p_idx, rank""")
    con.execute("""
        CREATE TEMP TABLE first_hit AS
        SELECT partner, p_idx, arg_min(rank, rank) AS rank, arg_min(ref_idx, rank) AS ref_idx
        FROM hits WHERE targets = 1 GROUP BY partner, p_idx""")
    matched = con.execute("SELECT partner, rank, count(*) FROM first_hit GROUP BY ALL").fetchall()
    conflicts = con.execute("""
        SELECT h.partner, h.rank, count(*) FROM hits h JOIN first_hit f USING (partner, p_idx)
        WHERE h.targets = 1 AND h.ref_idx <> f.ref_idx GROUP BY ALL""").fetchall()
    has_token = " OR ".join(f"{k} IS NOT NULL" for k in keys)
    all_rows = " UNION ALL ".join(
        f"SELECT {pi} AS partner, file_row_number AS p_idx, ({has_token}) AS has_token "
        f"FROM read_parquet('{p / 'tokens.parquet'}', file_row_number = true)"
        for pi, p in enumerate(partners)
    )
    reference_rows = con.execute(f"SELECT count(*) FROM read_parquet('{reference / 'tokens.parquet'}')").fetchone()[0]
    con.execute(f"""
        CREATE TEMP TABLE rows AS
        SELECT row_number() OVER () - 1 AS g, a.partner, a.p_idx, a.has_token, f.rank, f.ref_idx
        FROM ({all_rows}) a LEFT JOIN first_hit f USING (partner, p_idx)""")
    link = [keys.index(k) for k in LINK_KEYS]
    con.execute(f"""
        CREATE TEMP TABLE edges AS
        WITH e AS (SELECT DISTINCT r.g, t.token, t.rank FROM part_tok t JOIN rows r USING (partner, p_idx)
                   WHERE t.rank IN ({", ".join(map(str, link))})
                     AND NOT (t.rank = {keys.index('phone')} AND t.token IN (SELECT token FROM shared_lines)))
        SELECT g, rank, token FROM e QUALIFY count(*) OVER (PARTITION BY rank, token) > 1""")
    con.execute(f"""
        CREATE TEMP TABLE labels AS
        SELECT g, coalesce(ref_idx, g + {reference_rows}) AS label, ref_idx IS NOT NULL AS fixed FROM rows""")
    for _ in range(64):
        con.execute("""
            CREATE OR REPLACE TEMP TABLE new_labels AS
            WITH tl AS (SELECT e.rank, e.token, min(l.label) AS label FROM edges e JOIN labels l USING (g)
                        GROUP BY e.rank, e.token),
                 best AS (SELECT e.g, min(tl.label) AS best FROM edges e JOIN tl USING (rank, token) GROUP BY e.g)
            SELECT l.g, CASE WHEN NOT l.fixed AND b.best < l.label THEN b.best ELSE l.label END AS label, l.fixed
            FROM labels l LEFT JOIN best b USING (g)""")
        changed = con.execute(
            "SELECT count(*) FROM new_labels n JOIN labels l USING (g) WHERE n.label <> l.label").fetchone()[0]
        con.execute("DROP TABLE labels")
        con.execute("ALTER TABLE new_labels RENAME TO labels")
        if not changed:
            break
    con.execute(f"""
        CREATE TEMP TABLE matched_rows AS
        SELECT r.partner, r.has_token, r.rank, l.label AS person, l.label < {reference_rows} AS registered,
               {", ".join(f"a.{x}" for x in ATTRIBUTES)}
        FROM rows r JOIN labels l USING (g)
        LEFT JOIN (SELECT file_row_number AS ref_idx, {", ".join(ATTRIBUTES)} FROM {ref}) a USING (ref_idx)""")
    tables = [
        con.execute("SELECT partner, CASE WHEN NOT has_token THEN -2 WHEN rank IS NULL THEN -1 ELSE rank END, "
                    "count(*) FROM matched_rows GROUP BY ALL").fetchall(),
        con.execute("SELECT lists, registered, count(*) FROM (SELECT person, string_agg(DISTINCT partner::VARCHAR, "
                    "' & ' ORDER BY partner::VARCHAR) AS lists, any_value(registered) AS registered "
                    "FROM matched_rows GROUP BY person) GROUP BY ALL").fetchall(),
        con.execute("WITH o AS (SELECT DISTINCT person, partner FROM matched_rows) SELECT a.partner, b.partner, "
                    "count(DISTINCT a.person) FROM o a JOIN o b USING (person) GROUP BY ALL").fetchall(),
    ]
    for attribute in ATTRIBUTES:
        tables.append(con.execute(
            f"SELECT partner, {attribute}, count(DISTINCT person) FROM matched_rows "
            f"WHERE registered AND {attribute} IS NOT NULL GROUP BY ALL").fetchall())
    persons = con.execute(
        "SELECT count(DISTINCT person), count(DISTINCT person) FILTER (WHERE registered) FROM matched_rows"
    ).fetchone()
    total = time.perf_counter() - start
    names = [f"partner-{i + 1}" for i in range(len(partners))]
    return {
        "times": {"total": total}, "matched": _nest(matched, names, keys),
        "conflicts": _nest(conflicts, names, keys),
        "ambiguous": {keys[r]: n for r, n in sorted(ambiguous.items())}, "persons": list(persons),
        "tables": len(tables),
    }


def _nest(rows: list[tuple], names: list[str], keys: list[str]) -> dict:
    out: dict[str, dict[str, int]] = {n: {k: 0 for k in keys} for n in names}
    for partner, rank, n in rows:
        out[names[partner]][keys[rank]] = n
    return out


# ---------------------------------------------------------------- driver


def measure(pipeline: str, work: Path) -> tuple[dict, float, float]:
    """Result, whole-process seconds and peak RSS (MB) of one pipeline in a fresh process."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, "--run", pipeline, "--work", str(work)],
                             stdout=subprocess.PIPE, text=True)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{pipeline} failed")
    return json.loads(out.strip().splitlines()[-1]), elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-rows", type=int, default=13_000_000)
    parser.add_argument("--partner-rows", type=int, default=1_000_000)
    parser.add_argument("--partners", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build the inputs here (or reuse them) instead of a temp folder")
    parser.add_argument("--run", choices=["cleanroom", "duckdb"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        build_inputs(args.work, args.reference_rows, args.partner_rows, args.partners)
        return
    if args.run:
        print(json.dumps({"cleanroom": run_cleanroom, "duckdb": run_duckdb}[args.run](args.work)))
        return
    with tempfile.TemporaryDirectory(prefix="cleanroom-bench-") as tmp:
        work = args.keep or Path(tmp)
        if not (work / "bundles").is_dir():
            start = time.perf_counter()
            # in a child: a parent's resident memory would count in its children's peak RSS
            subprocess.run([sys.executable, __file__, "--build", "--work", str(work),
                            "--reference-rows", str(args.reference_rows), "--partner-rows",
                            str(args.partner_rows), "--partners", str(args.partners)], check=True)
            print(f"built inputs in {time.perf_counter() - start:.1f} s")
        print(f"reference {args.reference_rows:,} rows x {len(KEYS)} keys; "
              f"{args.partners} partners x {args.partner_rows:,} rows; {os.cpu_count()} cores; "
              f"load average before {os.getloadavg()[0]:.2f}")
        results = {p: measure(p, work) for p in ("cleanroom", "duckdb")}
        for pipeline, (result, whole, peak) in results.items():
            phases = "  ".join(f"{k} {v:6.2f} s" for k, v in result["times"].items())
            print(f"{pipeline:10s} {phases}  process {whole:6.2f} s  peak RSS {peak:,.0f} MB")
        ours, theirs = results["cleanroom"][0], results["duckdb"][0]
        joins = ours["times"]["match"] + ours["times"]["report"]
        print(f"time ratio cleanroom/duckdb: {ours['times']['total'] / theirs['times']['total']:.2f} "
              f"(with verification), {joins / theirs['times']['total']:.2f} (joins and reports only)")
        print(f"load average after {os.getloadavg()[0]:.2f}")
        for field in ("matched", "conflicts", "ambiguous", "persons"):
            same = ours[field] == theirs[field]
            print(f"{field:10s} {'agree' if same else 'DIFFER'}: {json.dumps(ours[field])}"
                  + ("" if same else f" vs duckdb {json.dumps(theirs[field])}"))


if __name__ == "__main__":
    main()
