"""The partner hash path: API, CLI, bundle contents and every bad-input case."""

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanroom import hash_frame, load_key, load_spec, verify_bundle
from cleanroom.cli import main
from cleanroom.errors import VerificationError
from cleanroom.tokens import FORMAT_VERSION, token

MAPPING = ["Email=email", "Email 2=email", "Mobile=phone", "First=first_name", "Last=last_name",
           "DOB=dob", "ZIP=zip"]


def run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


def hash_args(source: Path, out: Path, key_file: Path, identity_dir: Path, *extra: str) -> list:
    return ["hash", source, "--key", key_file, "--identity", identity_dir,
            "--out", out / "bundle", "--vault", out / "vault", *extra]


def mapped(spec=None):
    spec = spec or load_spec()
    return spec.with_columns({m.split("=")[0]: m.split("=")[1] for m in MAPPING})


def test_hash_frame_tokens_match_reference(contacts, key_file):
    key = load_key(key_file)
    tokens, vault, summary = hash_frame(contacts, key, mapped(), id_column="Member No")
    assert tokens.columns == ["handle", *[k.name for k in load_spec().keys]]
    assert tokens["handle"].is_sorted()  # random order: sorted by random handle
    assert vault.columns == ["handle", "row", "id"]
    row_of = dict(zip(vault["handle"], vault["row"], strict=True))
    by_row = {row_of[h]: r for h, r in zip(tokens["handle"], tokens.iter_rows(named=True), strict=True)}
    email_key = key.subkey("email", FORMAT_VERSION)
    assert by_row[1]["email"] == [token(["janedoe@gmail.com"], email_key)]  # dots and +tag collapse
    assert by_row[4]["email"] == [token(["carla@example.net"], email_key)]
    assert by_row[3]["email"] is None and by_row[5]["name_dob"] is None
    assert by_row[1]["phone"] == [token(["+15035550123"], key.subkey("phone", FORMAT_VERSION))]
    assert summary.rows == 5 and summary.rows_with_token == 5
    assert dict(zip(vault["row"], vault["id"], strict=True))[2] == "M2"
    email_stats = next(f for f in summary.fields if f.column == "Email")
    assert (email_stats.missing, email_stats.invalid) == (1, 1)
    assert sum(email_stats.reasons.values()) == 1


def test_hash_frame_accepts_pandas(contacts, key_file):
    pd = pytest.importorskip("pandas")
    tokens, _, _ = hash_frame(pd.DataFrame(contacts.to_dict(as_series=False)), load_key(key_file), mapped())
    assert tokens.height == 5


def test_handles_fresh_tokens_stable(contacts, key_file):
    key = load_key(key_file)
    first, _, _ = hash_frame(contacts, key, mapped())
    second, _, _ = hash_frame(contacts, key, mapped())
    assert set(first["handle"]).isdisjoint(second["handle"])
    flat = lambda df: sorted(t for ts in df["email"].drop_nulls() for t in ts)  # noqa: E731
    assert flat(first) == flat(second)


def test_cli_hash_verify_and_tamper(contacts, tmp_path, key_file, identity_dir, passphrase_env, capsys):
    source = tmp_path / "members.csv"
    contacts.write_csv(source)
    maps = [a for m in MAPPING for a in ("--map", m)]
    code, out, err = run(hash_args(source, tmp_path, key_file, identity_dir, *maps, "--id-column", "Member No"), capsys)
    assert code == 0, err
    assert "rows read: 5" in out
    assert "rare values only, bar 0.02" in out  # the default spec's names-only key
    bundle = tmp_path / "bundle"
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "manifest.sig", "tokens.parquet"]
    manifest = verify_bundle(bundle)
    assert manifest.consortium_id == "riverside-2026" and manifest.epoch == 1
    assert manifest.key_fingerprint == load_key(key_file).fingerprint
    assert manifest.spec_digest == load_spec().digest()
    assert pl.read_parquet(tmp_path / "vault" / "vault.parquet")["id"].sort().to_list() == ["M1", "M2", "M3", "M4", "M5"]
    assert run(["verify", bundle], capsys)[0] == 0

    manifest_path = bundle / "manifest.json"
    original = manifest_path.read_text()
    manifest_path.write_text(original.replace('"row_count": 5', '"row_count": 6'))
    code, _, err = run(["verify", bundle], capsys)
    assert code == 2 and "signature" in err
    manifest_path.write_text(original)
    tokens = bundle / "tokens.parquet"
    raw = bytearray(tokens.read_bytes())
    raw[len(raw) // 2] ^= 1
    tokens.write_bytes(bytes(raw))
    code, _, err = run(["verify", bundle], capsys)
    assert code == 2 and "digest" in err


def test_verify_with_expected_signer(contacts, tmp_path, key_file, identity_dir, passphrase_env, capsys):
    from cleanroom.keys.identity import create_identity

    source = tmp_path / "members.csv"
    contacts.write_csv(source)
    maps = [a for m in MAPPING for a in ("--map", m)]
    assert run(hash_args(source, tmp_path, key_file, identity_dir, *maps), capsys)[0] == 0
    assert run(["verify", tmp_path / "bundle", "--signer", identity_dir], capsys)[0] == 0
    other = create_identity("Other Org", tmp_path / "other", b"pw")
    with pytest.raises(VerificationError):
        verify_bundle(tmp_path / "bundle", other)


def test_csv_variants_and_parquet(contacts, tmp_path, key_file, identity, capsys):
    from cleanroom import hash_file

    key = load_key(key_file)
    spec = mapped()
    reference, _, _ = hash_frame(contacts, key, spec)
    expected = sorted(t for ts in reference["phone"].drop_nulls() for t in ts)
    text = contacts.write_csv(separator=";")
    variants = {
        "bom.csv": ("\ufeff" + contacts.write_csv()).encode("utf-8"),
        "semicolon.csv": text.encode("utf-8"),
        "latin1.csv": text.encode("latin-1"),
    }
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
    contacts.write_parquet(tmp_path / "members.parquet")
    for name in [*variants, "members.parquet"]:
        out = tmp_path / f"out-{name}"
        encoding = "latin-1" if name.startswith("latin1") else "utf-8"
        hash_file(tmp_path / name, out / "b", out / "v", key=key, identity=identity, spec=spec, encoding=encoding)
        got = pl.read_parquet(out / "b" / "tokens.parquet")["phone"].drop_nulls()
        assert sorted(t for ts in got for t in ts) == expected, name


def test_batches_and_buckets_cover_every_row(tmp_path, key_file, identity, monkeypatch):
    import cleanroom.hashing as hashing
    from cleanroom import hash_file

    monkeypatch.setattr(hashing, "BATCH_ROWS", 700)
    monkeypatch.setattr(hashing, "BUCKET_ROWS", 1000)
    monkeypatch.setattr(hashing, "IN_MEMORY_BYTES", 0)
    n = 3500
    frame = pl.DataFrame({"email": [f"person{i}@example.org" for i in range(n)]})
    frame.write_csv(tmp_path / "big.csv")
    manifest, summary = hash_file(tmp_path / "big.csv", tmp_path / "b", tmp_path / "v",
                                  key=load_key(key_file), identity=identity, spec=load_spec())
    tokens = pl.read_parquet(tmp_path / "b" / "tokens.parquet")
    vault = pl.read_parquet(tmp_path / "v" / "vault.parquet")
    assert manifest.row_count == summary.rows == tokens.height == vault.height == n
    assert tokens["handle"].n_unique() == n
    assert set(tokens["handle"]) == set(vault["handle"])
    assert sorted(vault["row"]) == list(range(1, n + 1))
    rows = tokens.join(vault, on="handle", maintain_order="left")["row"].to_list()
    assert rows != sorted(rows)  # input order does not survive
    assert tokens["handle"].is_sorted()  # buckets are handle ranges, each sorted
    verify_bundle(tmp_path / "b")


@pytest.mark.parametrize(("n", "in_memory_bytes"), [(1, 0), (999, 0), (1000, 0), (2500, 0), (2500, 10**9)])
@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_small_and_spilled_inputs_come_out_sorted_by_handle(
    tmp_path, key_file, identity, monkeypatch, n, in_memory_bytes, suffix
):
    """Read whole (up to BUCKET_ROWS rows, or IN_MEMORY_BYTES at any row count) or spilled to buckets."""
    import cleanroom.hashing as hashing
    from cleanroom import hash_file

    monkeypatch.setattr(hashing, "BATCH_ROWS", 600)
    monkeypatch.setattr(hashing, "BUCKET_ROWS", 1000)
    monkeypatch.setattr(hashing, "IN_MEMORY_BYTES", in_memory_bytes)
    frame = pl.DataFrame({"email": [f"p{i}@example.org" for i in range(n)], "unused": ["x" * 50] * n})
    source = tmp_path / f"l.{suffix}"
    frame.write_csv(source) if suffix == "csv" else frame.write_parquet(source)
    spilled, write = [], hashing._Shuffle.write
    monkeypatch.setattr(hashing._Shuffle, "write", lambda self, out: spilled.append(self) or write(self, out))
    hash_file(source, tmp_path / "b", tmp_path / "v", key=load_key(key_file), identity=identity, spec=load_spec())
    assert bool(spilled) == (n > 1000 and in_memory_bytes == 0)
    handles = pl.read_parquet(tmp_path / "b" / "tokens.parquet")["handle"]
    assert handles.len() == handles.n_unique() == n and handles.is_sorted()


def test_keys_sharing_variant_columns_give_what_each_gives_alone(key_file):
    """Deletion and day/month variants several keys use are computed once, for the same tokens."""
    from cleanroom.hashing import HashPlan
    from cleanroom.spec import MatchSpec

    keys = [
        {"name": "a", "fields": ["first", "last", "dob"], "variants": ["deletions:last", "dob_dm_swap"]},
        {"name": "b", "fields": ["last", "zip5"], "variants": ["deletions:last"]},
        {"name": "c", "fields": ["first", "dob"], "variants": ["dob_dm_swap"]},
    ]
    frame = pl.DataFrame({
        "first_name": ["Maria", "Jo", None, "Ann"], "last_name": ["Garcia", "Li", "Smith", "O'Neil"],
        "dob": ["1984-03-07", "2001-12-11", "1990-01-01", None], "zip": ["27601", None, "02134", "97201"],
    })
    key = load_key(key_file)

    def by_row(spec_keys: list[dict]) -> dict[str, list]:
        tokens, vault, _ = hash_frame(frame, key, MatchSpec(keys=spec_keys))
        rows = tokens.join(vault, on="handle").sort("row")
        return {k["name"]: [sorted(t) if t is not None else None for t in rows[k["name"]].to_list()] for k in spec_keys}

    together = by_row(keys)
    assert together == {k["name"]: by_row([k])[k["name"]] for k in keys}
    plan = HashPlan.build(MatchSpec(keys=keys), key, frame.columns)
    assert len(plan.variants) == 12 + 1  # the deletions of the last name and the swapped date, once each


def test_decoded_size_counts_the_used_columns(tmp_path):
    from cleanroom.hashing import _decoded_size

    pl.DataFrame({"email": ["p@example.org"] * 100, "unused": ["x" * 50] * 100}).write_parquet(tmp_path / "l.parquet")
    used, everything = (_decoded_size(tmp_path / "l.parquet", c) for c in (["email"], ["email", "unused"]))
    assert 0 < used < everything


# Values long enough that finding one in random token bytes is not chance; names
# that are also words of the manifest's vocabulary (key and field names) are excluded.
VOCABULARY = load_spec().model_dump_json().lower()
emails = st.emails().filter(lambda e: len(e) >= 8)
names = st.from_regex(r"[A-Z][a-zà-ÿ]{5,11}", fullmatch=True).filter(lambda n: n.lower() not in VOCABULARY)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(emails, names, names), min_size=1, max_size=20))
def test_no_plaintext_or_key_in_bundle(rows, tmp_path_factory, key_file, identity):
    from cleanroom import hash_file

    folder = tmp_path_factory.mktemp("plain")
    frame = pl.DataFrame(rows, schema=["email", "first_name", "last_name"], orient="row").with_columns(
        dob=pl.lit("1980-02-03"), zip=pl.lit("97201")  # so every row has a token even if its email is invalid
    )
    frame.write_csv(folder / "in.csv")
    key = load_key(key_file)
    hash_file(folder / "in.csv", folder / "b", folder / "v", key=key, identity=identity, spec=load_spec())
    blob = b"".join(p.read_bytes() for p in (folder / "b").iterdir())
    needles = {key.secret, key.secret.hex().encode()}
    for value in frame.to_numpy().ravel():
        needles |= {value.encode(), value.lower().encode()}
    for needle in needles:
        assert needle not in blob


# --- bad input: one line on stderr, exit code 2, nothing written -----------------

def _assert_clean_failure(code, err, tmp_path, secret_values=()):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for value in secret_values:
        assert value not in err
    assert not (tmp_path / "bundle").exists() and not (tmp_path / "vault").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "case",
    ["missing_column", "no_file", "directory", "bad_parquet", "undecodable", "empty", "header_only",
     "bad_spec", "unknown_field_spec", "all_invalid", "bad_map", "disallowed_attr", "bad_key"],
)
def test_bad_input(case, tmp_path, key_file, identity_dir, passphrase_env, capsys):
    source = tmp_path / "in.csv"
    source.write_text("email,first_name\njane.doe@example.org,Jane\n")
    extra: list[str] = []
    key = key_file
    if case == "missing_column":
        extra = ["--map", "E-mail=email"]
    elif case == "no_file":
        source = tmp_path / "nope.csv"
    elif case == "directory":
        source = tmp_path / "adir.csv"
        source.mkdir()
    elif case == "bad_parquet":
        source = tmp_path / "in.parquet"
        source.write_bytes(b"PAR1 not really")
    elif case == "undecodable":
        source.write_bytes(b"email,first_name\njane@example.org,Jane\nbob@example.org,Ren\xe9e\n")
    elif case == "empty":
        source.write_bytes(b"")
    elif case == "header_only":
        source.write_text("email,first_name\n")
    elif case == "bad_spec":
        (tmp_path / "spec.toml").write_text("keys = [[[")
        extra = ["--spec", tmp_path / "spec.toml"]
    elif case == "unknown_field_spec":
        (tmp_path / "spec.toml").write_text('[[keys]]\nname = "x"\nfields = ["shoe_size"]\n')
        extra = ["--spec", tmp_path / "spec.toml"]
    elif case == "all_invalid":
        source.write_text("email,first_name\nnot-an-email,\nalso bad,\n")
    elif case == "bad_map":
        extra = ["--map", "email=favourite_colour"]
    elif case == "disallowed_attr":
        extra = ["--attr", "first_name"]
    elif case == "bad_key":
        key = tmp_path / "missing.key"
    code, _, err = run(hash_args(source, tmp_path, key, identity_dir, *extra), capsys)
    if case == "undecodable":
        assert "line 3" in err
    if case == "bad_spec" or case == "unknown_field_spec":
        assert "spec" in err
    _assert_clean_failure(code, err, tmp_path, ["jane.doe", "Jane", "Ren", "not-an-email"])


def test_missing_passphrase_is_an_error_not_a_hang(tmp_path, key_file, identity_dir, monkeypatch):
    monkeypatch.delenv("CLEANROOM_PASSPHRASE", raising=False)
    source = tmp_path / "in.csv"
    source.write_text("email\njane@example.org\n")
    result = subprocess.run(
        [sys.executable, "-m", "cleanroom", *map(str, hash_args(source, tmp_path, key_file, identity_dir))],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "CLEANROOM_PASSPHRASE"},
    )
    assert result.returncode == 2 and "passphrase" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_real_entry_point_end_to_end(contacts, tmp_path, key_file, identity_dir):
    source = tmp_path / "members.csv"
    contacts.write_csv(source)
    env = {**os.environ, "CLEANROOM_PASSPHRASE": "correct horse battery staple"}
    cli = [sys.executable, "-m", "cleanroom"]
    maps = [a for m in MAPPING for a in ("--map", m)]
    done = subprocess.run([*cli, *map(str, hash_args(source, tmp_path, key_file, identity_dir, *maps))],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    checked = subprocess.run([*cli, "verify", str(tmp_path / "bundle")], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0 and "ok:" in checked.stdout
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert "secret" not in json.dumps(manifest).lower()


def test_verify_refuses_bad_parquet_magic(contacts, tmp_path, key_file, identity):
    from cleanroom import hash_file

    contacts.write_csv(tmp_path / "in.csv")
    hash_file(tmp_path / "in.csv", tmp_path / "b", tmp_path / "v", key=load_key(key_file), identity=identity,
              spec=mapped())
    tokens = tmp_path / "b" / "tokens.parquet"
    raw = bytearray(tokens.read_bytes())
    raw[:4] = b"JUNK"
    tokens.write_bytes(bytes(raw))
    from cleanroom.bundle import file_digest, read_manifest, sign_manifest

    manifest, _ = read_manifest(tmp_path / "b")  # re-signed with the new digest: only the magic is wrong
    sign_manifest(tmp_path / "b", manifest.model_copy(update={"tokens_digest": file_digest(tokens)}), identity)
    with pytest.raises(VerificationError, match="magic"):
        verify_bundle(tmp_path / "b")


def test_unexpected_errors_do_not_print_their_text(monkeypatch, capsys, tmp_path):
    import cleanroom.cli.partner as partner

    def boom(*args, **kwargs):
        raise RuntimeError("jane.doe@example.org leaked by a library message")

    monkeypatch.setattr(partner, "verify_bundle", boom)
    monkeypatch.delenv("CLEANROOM_DEBUG", raising=False)
    code, _, err = run(["verify", tmp_path], capsys)
    assert code == 1 and "RuntimeError" in err and "jane.doe" not in err


BAD_CONTENTS = [
    ("handles are malformed or repeated", pl.col("handle").gather(pl.int_range(pl.len()) // 2)),
    ("handles are malformed or repeated", pl.col("handle").bin.slice(0, 15)),
    ("key email holds malformed", pl.col("email").list.eval(pl.element().bin.slice(0, 15))),
    ("key phone token count differs", pl.lit(None, dtype=pl.List(pl.Binary)).alias("phone")),
]


@pytest.mark.parametrize(("message", "damage"), BAD_CONTENTS, ids=["repeated", "short", "token", "count"])
def test_signed_bundle_with_bad_contents_is_refused(message, damage, tmp_path, contacts, key_file, identity):
    """A producer's valid signature does not make malformed, repeated or miscounted rows acceptable."""
    from cleanroom import hash_file
    from cleanroom.bundle import TOKENS_FILE, file_digest, read_manifest, sign_manifest

    contacts.write_csv(tmp_path / "in.csv")
    hash_file(tmp_path / "in.csv", tmp_path / "b", tmp_path / "v", key=load_key(key_file), identity=identity,
              spec=mapped())
    tokens = tmp_path / "b" / TOKENS_FILE
    pl.read_parquet(tokens).with_columns(damage).write_parquet(tokens)
    manifest, _ = read_manifest(tmp_path / "b")
    sign_manifest(tmp_path / "b", manifest.model_copy(update={"tokens_digest": file_digest(tokens)}), identity)
    with pytest.raises(VerificationError, match=message):
        verify_bundle(tmp_path / "b")


FIRSTS, LASTS = ["Ann", "Bo", "Cy", "Di"], ["Ng", "Oz", "Poe"]


def letters(i: int, width: int) -> str:
    """A name made of letters (normalizers drop digits): the i-th of 26**width."""
    return "".join(chr(97 + i // 26**d % 26) for d in range(width)).title()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.tuples(st.sampled_from(FIRSTS), st.sampled_from(LASTS)), min_size=1, max_size=30),
       bar=st.sampled_from([0.3, 1.0, 2.5, 7.0]), reference=st.booleans())
def test_rare_value_gate_keeps_exactly_the_rows_expected_to_be_rare(names, bar, reference, key_file):
    """A row keeps a gated key's tokens iff rows * share(first) * share(last) <= the bar (for a partner list
    the bar or 1, whichever is higher); the gate removes tokens, never changes them."""
    from cleanroom.spec import MatchSpec

    frame = pl.DataFrame(names, schema=["first_name", "last_name"], orient="row")
    key = load_key(key_file)
    last = {"name": "last", "fields": ["last"]}  # a bundle needs some token
    spec = MatchSpec(keys=[{"name": "names", "fields": ["first", "last"], "max_expected_holders": bar}, last])
    ungated = MatchSpec(keys=[{"name": "names", "fields": ["first", "last"]}, last])
    hashed = [hash_frame(frame, key, s, reference=reference)[:2] for s in (spec, ungated)]
    stored = hashed[0][0]["names"].to_arrow()
    assert len(stored.values) == stored.value_lengths().fill_null(0).to_numpy().sum()  # nothing behind a null
    gated, plain = (tokens.join(vault, on="handle").sort("row")["names"] for tokens, vault in hashed)
    n = len(names)
    firsts, lasts = [f for f, _ in names], [last for _, last in names]
    bar = Fraction(str(bar if reference else max(bar, 1.0)))  # exact: 10 * 0.3 * 0.1 is above 0.3 in floats
    rare = [n * Fraction(firsts.count(f), n) * Fraction(lasts.count(last), n) <= bar for f, last in names]
    assert gated.is_not_null().to_list() == rare
    assert plain.is_not_null().all()
    assert gated.filter(rare).to_list() == plain.filter(rare).to_list()  # the gate removes tokens, never changes them


def test_rare_value_gate_counts_the_whole_file_not_a_batch(tmp_path, key_file, identity, monkeypatch):
    """hash_file counts values over every row before its batches (here 300 rows, spilled to buckets), and a
    gated row's tokens are not in the bundle at all."""
    from cleanroom import hash_file, hashing
    from cleanroom.spec import MatchSpec

    monkeypatch.setattr(hashing, "BATCH_ROWS", 300)
    monkeypatch.setattr(hashing, "BUCKET_ROWS", 500)
    monkeypatch.setattr(hashing, "IN_MEMORY_BYTES", 0)
    n = 1200  # five first names, "Smith" on 900 rows: 240 * 900 / 1200 = 180 expected holders, 45 in a batch
    frame = pl.DataFrame({"first_name": [FIRSTS[i % 4] if i % 5 else "Ed" for i in range(n)],
                          "last_name": [letters(i, 3) if i % 4 == 0 else "Smith" for i in range(n)]})
    frame.write_csv(tmp_path / "l.csv")
    spec = MatchSpec(keys=[{"name": "names", "fields": ["first", "last"], "max_expected_holders": 100}])
    manifest, _ = hash_file(tmp_path / "l.csv", tmp_path / "b", tmp_path / "v", key=load_key(key_file),
                            identity=identity, spec=spec, reference=True)
    tokens = pl.read_parquet(tmp_path / "b" / "tokens.parquet")
    rows = tokens.join(pl.read_parquet(tmp_path / "v" / "vault.parquet"), on="handle").sort("row")
    assert rows["names"].is_not_null().to_list() == [i % 4 == 0 for i in range(n)]
    assert manifest.keys[0].non_null == n // 4
    stored = pq.read_table(tmp_path / "b" / "tokens.parquet").column("names").combine_chunks()
    assert len(stored.values) == n // 4
    verify_bundle(tmp_path / "b")


@pytest.mark.parametrize("reference", [True, False])
def test_reference_gates_at_the_bar_partner_only_above_one_expected_row(reference, tmp_path, key_file, identity):
    """Rows expected on 0.8 rows each: the voter file drops them at bar 0.5, a partner list keeps them."""
    from cleanroom import hash_file
    from cleanroom.spec import MatchSpec

    n = 400  # five first names, each last name on four rows: 400 * 1/5 * 4/400 = 0.8 expected holders per row
    pl.DataFrame({"first_name": [[*FIRSTS, "Ed"][i % 5] for i in range(n)],
                  "last_name": [letters(i // 4, 2) for i in range(n)]}).write_csv(tmp_path / "l.csv")
    spec = MatchSpec(keys=[{"name": "names", "fields": ["first", "last"], "max_expected_holders": 0.5},
                           {"name": "last", "fields": ["last"]}])
    manifest, _ = hash_file(tmp_path / "l.csv", tmp_path / "b", tmp_path / "v", key=load_key(key_file),
                            identity=identity, spec=spec, reference=reference)
    assert manifest.keys[0].non_null == (0 if reference else n)


COMMON = {"first_name": ["John"] * 60, "last_name": ["Smith"] * 60}
OTHER_READINGS = {
    # a swapped "Smith, John" is rare as written but reads as the 60 John Smiths
    "swapped": ({**COMMON, "first_name": [*COMMON["first_name"], "Smith"], "last_name": [*COMMON["last_name"], "John"]},
                ["swap_names"]),
    # the last name in a second column where the first is empty
    "second column": ({"first_name": ["John"] * 70, "last_name": ["Smith"] * 60 + [None] * 10,
                       "last_name_2": [None] * 60 + ["Smith"] * 10}, []),
    # no name columns: the names an email spells
    "email names": ({"email": [f"john.smith{i}@example.org" for i in range(60)]}, ["email_names"]),
    # names run together in the email beside the row's own last name
    "email names run together": ({"first_name": ["Jon"] * 60, "last_name": ["Smith"] * 60,
                                  "email": [f"johnsmith{i}@example.org" for i in range(60)]}, ["email_names"]),
}


@pytest.mark.parametrize("case", OTHER_READINGS, ids=list(OTHER_READINGS))
def test_rare_value_gate_checks_every_reading_of_a_row(case, key_file):
    """No reading of any row (swapped, a second column, an email's names) carries a common name's token."""
    from cleanroom.spec import MatchSpec

    columns, variants = OTHER_READINGS[case]
    key = load_key(key_file)
    names = {"name": "names", "fields": ["first", "last"], "variants": variants}
    common = hash_frame(pl.DataFrame({"first_name": ["John"], "last_name": ["Smith"]}), key,
                        MatchSpec(keys=[names]))[0]["names"][0][0]
    spec = MatchSpec(keys=[{**names, "max_expected_holders": 0.5}, {"name": "any", "fields": ["last"]},
                           {"name": "email", "fields": ["email"]}])
    tokens = hash_frame(pl.DataFrame(columns), key, spec, reference=True)[0]
    assert common not in tokens["names"].explode().drop_nulls().to_list()


def gated_rows(columns: dict, bar: float, key_file, *, reference: bool) -> list[bool]:
    """Per input row, whether it keeps a token of a names key with swapped names, gated at `bar`."""
    from cleanroom.spec import MatchSpec

    spec = MatchSpec(keys=[{"name": "names", "fields": ["first", "last"], "variants": ["swap_names"],
                            "max_expected_holders": bar}, {"name": "any", "fields": ["last"]}])
    tokens, vault, _ = hash_frame(pl.DataFrame(columns), load_key(key_file), spec, reference=reference)
    return tokens.join(vault, on="handle").sort("row")["names"].is_not_null().to_list()


def test_rare_value_shares_count_every_reading_once_per_row(key_file):
    # as written each name is on half the rows (0.5 expected); read either way, both are on every row (2)
    assert gated_rows({"first_name": ["John", "Smith"], "last_name": ["Smith", "John"]}, 1.0, key_file,
                      reference=False) == [False, False]
    # "Lee Lee" reads "lee" once at each place, not twice: 4 * 1/4 * 1/4 = 0.25
    assert gated_rows({"first_name": ["Lee", "Ann", "Bo", "Cy"], "last_name": ["Lee", "Ng", "Oz", "Poe"]}, 0.5,
                      key_file, reference=True)[0]


def test_rare_rows_keep_their_tokens_beside_common_ones(key_file):
    columns = {"first_name": ["John"] * 60 + ["Zed"], "last_name": ["Smith"] * 60 + ["Quux"]}
    assert gated_rows(columns, 0.5, key_file, reference=True) == [False] * 60 + [True]


def _linked_pairs() -> list[tuple[str, str]]:
    """(name, a nickname of it) from the nicknames package, letters only, that `first_canon` takes to two
    different canonical names: the pairs only the variant joins."""
    from nicknames import NickNamer

    from cleanroom.normalize.names import first_canon

    pairs = sorted({(x, y) for x, names in NickNamer().nickname_lookup.items() for y in names
                    if x.isalpha() and y.isalpha()})
    canonical = pl.DataFrame(pairs, schema=["x", "y"], orient="row").select(
        first_canon(pl.col("x")), first_canon(pl.col("y")).alias("y")).rows()
    return [pair for pair, (cx, cy) in zip(pairs, canonical, strict=True) if cx != cy]


def nickname_tokens(names: list[str], variants: list[str], key_file) -> list[set]:
    """Per name (last name Smith, zip 27601 on every row), its tokens of a names + zip key with `variants`."""
    from cleanroom.spec import MatchSpec

    frame = pl.DataFrame({"first_name": names, "last_name": ["Smith"] * len(names), "zip": ["27601"] * len(names)})
    spec = MatchSpec(keys=[{"name": "k", "fields": ["first_canon", "last", "zip5"], "variants": variants}])
    hashed, vault, _ = hash_frame(frame, load_key(key_file), spec)
    return [set(t) for t in hashed.join(vault, on="handle").sort("row")["k"].to_list()]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pair=st.sampled_from(_linked_pairs()))
def test_nickname_variant_lets_a_name_meet_its_nicknames(pair, key_file):
    """Two rows whose first names the nickname table links (to different canonical names) share a token of a
    key with the nicknames variant; without the variant each row has one token and they share none."""
    first, second = nickname_tokens(list(pair), ["nicknames"], key_file)
    assert first & second
    plain = nickname_tokens(list(pair), [], key_file)
    assert [len(t) for t in plain] == [1, 1] and not plain[0] & plain[1]


def test_nickname_variant_joins_direct_links_only(key_file):
    """Charles and Sheryl both link to Charlotte but not to each other: they share nothing; a name without
    links keeps its one token and meets itself."""
    names = ["Charles", "Sheryl", "Zelda", "Zelda"]
    charles, sheryl, zelda, zelda_again = nickname_tokens(names, ["nicknames"], key_file)
    assert not charles & sheryl
    assert len(zelda) == 1 and zelda == zelda_again


def test_a_rows_tokens_come_in_byte_order(key_file):
    """The order of a row's tokens says nothing about which reading gave which (own name, swap, deletion)."""
    from cleanroom.spec import MatchSpec

    frame = pl.DataFrame({"first_name": ["Maria", "Jo", "Ann"], "last_name": ["Garcia", "Li", "Garcia"],
                          "zip": ["27601"] * 3})
    spec = MatchSpec(keys=[{"name": "k", "fields": ["first", "last", "zip5"],
                            "variants": ["swap_names", "deletions:last"]}])
    lists = hash_frame(frame, load_key(key_file), spec)[0]["k"].to_list()
    assert all(len(tokens) > 2 and tokens == sorted(tokens) for tokens in lists)
