"""Synthetic voter file and partner lists: determinism, structure, truth, noise rates."""

from __future__ import annotations

import polars as pl
import pytest

from cleanroom.cli import main
from cleanroom.errors import InputError
from cleanroom.synth import (
    MODIFICATIONS,
    PARTNER_COLUMNS,
    VOTER_COLUMNS,
    generate_partners,
    generate_voters,
    read_truth,
)


@pytest.fixture(scope="module")
def voters() -> pl.DataFrame:
    return generate_voters(30_000, seed=11)


def test_voters_are_deterministic_and_shaped(voters: pl.DataFrame) -> None:
    assert voters.equals(generate_voters(30_000, seed=11))
    assert not voters.equals(generate_voters(30_000, seed=12))
    assert tuple(voters.columns) == VOTER_COLUMNS
    assert voters["voter_id"].is_unique().all()
    assert voters["zip"].str.contains(r"^\d{5}(-\d{4})?$").all()
    assert voters["dob"].str.to_date("%Y-%m-%d").is_not_null().all()
    assert voters["first_name"].null_count() == 0
    assert 0.3 < voters["phone"].is_not_null().mean() < 0.7


def test_voter_geography_is_hierarchical(voters: pl.DataFrame) -> None:
    for parent in ("county", "congressional_district", "state_senate_district",
                   "state_house_district"):
        assert voters.group_by("precinct").agg(pl.col(parent).n_unique())[parent].max() == 1
    zip5 = pl.col("zip").str.slice(0, 5)
    assert voters.group_by(zip5).agg(pl.col("county").n_unique())["county"].max() == 1
    assert voters["precinct"].n_unique() > 10


def test_voters_have_real_ambiguity(voters: pl.DataFrame) -> None:
    addr = ["house_number", "street", "unit", "zip"]
    households = voters.group_by(addr).len()
    assert households["len"].mean() > 1.4
    twins = voters.group_by([*addr, "last_name", "dob"]).len().filter(pl.col("len") > 1)
    assert len(twins) > 0
    same_name_zip = voters.group_by("first_name", "last_name", pl.col("zip").str.slice(0, 5)).len()
    assert (same_name_zip["len"] > 1).sum() > 50
    assert voters["suffix"].is_in(["JR", "SR"]).sum() > 50
    top = voters["last_name"].value_counts(sort=True)
    assert top["count"][0] > 20 * top["count"].median()


def test_birth_year_only() -> None:
    df = generate_voters(2000, seed=1, birth_year_only=True)
    assert "dob" not in df.columns and {"birth_year", "age"} <= set(df.columns)
    assert df["age"].min() >= 17 and df["birth_year"].max() <= 2008
    lists, truth = generate_partners(df, 1, sizes=300, seed=2)
    assert len(lists["partner1"]) == len(truth["partner1"])


def test_partners_are_deterministic(voters: pl.DataFrame) -> None:
    a = generate_partners(voters, 2, sizes=[800, 400], seed=3, profile="hard")
    b = generate_partners(voters, 2, sizes=[800, 400], seed=3, profile="hard")
    for name in a[0]:
        assert a[0][name].equals(b[0][name]) and a[1][name].equals(b[1][name])
    c = generate_partners(voters, 2, sizes=[800, 400], seed=4, profile="hard")
    assert not a[0]["partner1"].equals(c[0]["partner1"])


def test_truth_is_consistent_with_lists(voters: pl.DataFrame) -> None:
    lists, truth = generate_partners(voters, 3, sizes=[2000, 1000, 500], seed=5,
                                     registered_share=0.7)
    for i, (name, df) in enumerate(lists.items()):
        assert tuple(df.columns) == PARTNER_COLUMNS
        t = truth[name]
        assert len(t) == len(df)
        assert t["row"].to_list() == list(range(1, len(df) + 1))
        registered = t.filter(pl.col("voter_id").is_not_null())
        assert (registered["person_id"] < len(voters)).all()
        assert (voters["voter_id"].gather(registered["person_id"]) == registered["voter_id"]).all()
        assert (t.filter(pl.col("voter_id").is_null())["person_id"] >= len(voters)).all()
        assert 0.6 < len(registered) / len(t) < 0.8

        clean = pl.concat([df, t], how="horizontal").filter(pl.col("noise").list.len() == 0)
        joined = clean.join(voters.with_row_index("person_id").with_columns(pl.col("person_id").cast(pl.Int64)),
                            on="person_id", suffix="_v")
        assert len(joined) > 0.5 * len(clean)
        fmt = "%Y-%m-%d" if i % 2 == 0 else "%m/%d/%Y"
        checks = joined.select(
            first=pl.col("first_name").str.strip_chars().str.to_uppercase() == pl.col("first_name_v"),
            last=pl.col("last_name").str.strip_chars().str.to_uppercase() == pl.col("last_name_v"),
            zip=pl.col("zip").str.slice(0, 5) == pl.col("zip_v").str.slice(0, 5),
            address=pl.col("address").str.to_uppercase().str.replace_all(" +", " ")
            .str.starts_with(pl.col("house_number") + " ").fill_null(True),
            dob=(pl.col("dob").str.to_date(fmt) == pl.col("dob_v").str.to_date("%Y-%m-%d")).fill_null(True),
        )
        for col in checks.columns:
            assert checks[col].all(), (name, col)


def test_a_phone_is_the_persons_own(voters: pl.DataFrame) -> None:
    """A listed phone is the person's voter-file phone, or a number no voter and no other person has."""
    lists, truth = generate_partners(voters, 2, sizes=3000, seed=8)
    digits = pl.col("phone").str.replace_all(r"\D", "").str.replace(r"^1(\d{10})$", "$1")
    rows = pl.concat([pl.concat([df, truth[n]], how="horizontal") for n, df in lists.items()])
    rows = rows.select("person_id", "voter_id", digits).drop_nulls("phone").unique()
    voter_phones = voters.select("voter_id", own=pl.col("phone"))
    rows = rows.join(voter_phones, on="voter_id", how="left")
    others = rows.filter(pl.col("phone") != pl.col("own").fill_null(""))
    assert len(others) > 1000
    assert not others["phone"].is_in(voters["phone"].drop_nulls().implode()).any()
    assert others.group_by("phone").agg(pl.col("person_id").n_unique())["person_id"].max() == 1


def test_default_noise_rates_land_near_settings(voters: pl.DataFrame) -> None:
    rates = {"typo": 0.2, "swap_names": 0.1, "missing": 0.15, "moved": 0.1, "duplicate": 0.05,
             "plus_tag": 0.2}
    lists, truth = generate_partners(voters, 1, sizes=8000, seed=6, noise=rates)
    df, t = lists["partner1"], truth["partner1"]
    n = len(t)
    tags = t["noise"].explode().drop_nulls().value_counts()
    share = dict(zip(tags["noise"], (tags["count"] / n).to_list(), strict=True))
    for tag in ("typo", "swap_names", "missing", "moved"):
        assert abs(share[tag] - rates[tag]) < 0.02, tag
    assert abs(share["duplicate"] - rates["duplicate"]) < 0.01
    assert 0.06 < share["nickname"] < 0.10  # 10%, for the names that have a nickname
    assert abs(df["email"].str.contains("+", literal=True).mean() - 0.2 * 0.95) < 0.03
    dup_people = t.group_by("person_id").len().filter(pl.col("len") > 1)
    assert (dup_people["len"] - 1).sum() == t["noise"].list.contains("duplicate").sum()


def test_hard_profile_gives_one_to_three_modifications(voters: pl.DataFrame) -> None:
    lists, truth = generate_partners(voters, 1, sizes=6000, seed=7, profile="hard")
    t = truth["partner1"].with_columns(
        k=pl.col("noise").list.set_difference(["duplicate"]).list.len())
    assert t["k"].max() <= 3
    noisy = t.filter(pl.col("k") > 0)
    assert 0.7 < len(noisy) / len(t) < 0.82  # 80% chosen, a few modifications change nothing
    assert 1.8 < noisy["k"].mean() < 2.1
    seen = set(t["noise"].explode().drop_nulls().to_list())
    assert set(MODIFICATIONS) <= seen


def test_swapped_names_are_swapped(voters: pl.DataFrame) -> None:
    lists, truth = generate_partners(voters, 1, sizes=2000, seed=8,
                                     noise={"swap_names": 0.5, "nickname": 0.0, "phonetic": 0.0,
                                            "typo": 0.0, "missing": 0.0})
    df = pl.concat([lists["partner1"], truth["partner1"]], how="horizontal")
    swapped = df.filter(pl.col("noise").list.contains("swap_names") & pl.col("voter_id").is_not_null())
    v = voters.gather(swapped["person_id"])
    assert (swapped["first_name"].str.strip_chars().str.to_uppercase() == v["last_name"]).all()


def test_bad_settings_raise_input_errors(voters: pl.DataFrame) -> None:
    with pytest.raises(InputError):
        generate_partners(voters, 1, sizes=10, seed=1, profile="weird")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        generate_partners(voters, 1, sizes=10, seed=1, noise={"typo": 1.5})
    with pytest.raises(InputError):
        generate_partners(voters.drop("zip"), 1, sizes=10, seed=1)
    with pytest.raises(InputError):
        generate_voters(0, seed=1)


def test_cli_writes_voters_lists_and_truth(tmp_path, capsys) -> None:
    voters_file = tmp_path / "voters.parquet"
    with pytest.raises(SystemExit) as done:
        main(["synth", "voters", "--rows", "3000", "--seed", "1", "--out", str(voters_file)])
    assert done.value.code == 0
    out = tmp_path / "lists"
    with pytest.raises(SystemExit) as done:
        main(["synth", "partners", "--voters", str(voters_file), "--lists", "2", "--size", "300",
              "--size", "200", "--seed", "2", "--profile", "hard", "--out", str(out)])
    assert done.value.code == 0
    truth = read_truth(out / "truth")
    for name in ("partner1", "partner2"):
        assert len(pl.read_csv(out / f"{name}.csv")) == len(truth[name])
    with pytest.raises(SystemExit) as done:
        main(["synth", "partners", "--voters", str(tmp_path / "none.parquet"), "--out", str(out)])
    assert done.value.code == 2
    assert "none.parquet" in capsys.readouterr().err
