"""Checking keys and household phones: links the rest of a person's record contradicts are not made."""

import polars as pl
import pytest

from cleanroom import create_identity, hash_file, load_identity, new_key
from cleanroom.broker.engine import SHARED_CONTACT, run_match
from cleanroom.broker.load import load_inputs
from cleanroom.broker.match import cascade, reference_index
from cleanroom.broker.persons import resolve_persons
from cleanroom.spec import MatchSpec

KEYS = [
    {"name": "email", "fields": ["email"]},
    {"name": "phone", "fields": ["phone"]},
    {"name": "name_zip", "fields": ["first_canon", "last", "zip5"], "variants": ["swap_names"],
     "checked_by": ["name_year_zip"]},
    {"name": "name_year_zip", "fields": ["first_canon", "last", "birth_year", "zip5"], "variants": ["swap_names"]},
    {"name": "name", "fields": ["first_canon", "last"]},  # later and unchecked
]

VOTERS = pl.DataFrame({
    "voter_id": ["V1", "V2", "V3", "V4", "V5"],
    "first_name": ["Jane", "John", "Ada", "Max", "Ida"],
    "last_name": ["Doe", "Roe", "Lind", "Lind", "Berg"],
    "dob": ["1980-05-05", "1970-01-01", "1960-03-03", "1995-04-04", "1950-06-06"],
    "zip": ["97201"] * 5,
    "phone": [None, None, "5035550101", "5035550101", None],
})

LISTS = {
    "a": pl.DataFrame({  # a1: Jane Doe's namesake, born 1991; a2: Ada Lind; a3: Ida Berg; a4: John Roe, born 1970;
        # a5: Jane Doe
        "email": ["jd91@example.org", "ada@example.org", "ida@example.org", "jr@example.org", "jane@example.org"],
        "phone": [None, "5035550101", "5035550199", None, "5035550777"],
        "first_name": ["Jane", "Ada", "Ida", "John", "Jane"],
        "last_name": ["Doe", "Lind", "Berg", "Roe", "Doe"],
        "dob": ["1991-02-02", None, None, "1970-12-12", "1980-05-05"],
        "zip": ["97201"] * 5,
    }),
    "b": pl.DataFrame({  # b1: a1 again, no birth date; b2: John Roe; b3: a household member of Ada; b4: Ida, name
        # lost; b5: another Jane Doe, born 1991, on Jane's phone
        "email": ["jd91@example.org", "john.roe@example.org", "kid@example.org", "ib@example.org", None],
        "phone": [None, None, "5035550101", "5035550199", "5035550777"],
        "first_name": ["Jane", "John", "Kid", "Xq", "Jane"],
        "last_name": ["Doe", "Roe", "Lind", "Zz", "Doe"],
        "dob": [None, None, None, None, "1991-02-02"],
        "zip": ["97201"] * 5,
    }),
}


@pytest.fixture(scope="module")
def links(tmp_path_factory):
    """Voter id (or None) per (list, row), and the rule, from a cascade run on the lists above."""
    return _cascade(tmp_path_factory.mktemp("checks"), KEYS, VOTERS, LISTS)


def _cascade(root, keys, voters, lists):
    """Voter id (or None) and rule per (list, row), key stats, and whether each row's person is registered."""
    spec = MatchSpec.model_validate({"keys": keys})
    key = new_key("checks")

    def identity(name):
        create_identity(name, root / "id" / name, b"pw")
        return load_identity(root / "id" / name, b"pw")

    voters.write_csv(root / "voters.csv")
    hash_file(root / "voters.csv", root / "b" / "ref", root / "v" / "ref", key=key, spec=spec,
              identity=identity("ref"), reference=True, id_column="voter_id")
    for name, frame in lists.items():
        frame.write_csv(root / f"{name}.csv")
        hash_file(root / f"{name}.csv", root / "b" / name, root / "v" / name, key=key, spec=spec,
                  identity=identity(name))
    outcome = run_match(load_inputs([root / "b" / "ref"], [root / "b" / n for n in lists]))
    voters = pl.read_parquet(root / "v" / "ref" / "vault.parquet").select(ref_handle="handle", voter=pl.col("id"))
    found, registered = {}, {}
    for name in lists:
        rows = pl.read_parquet(root / "v" / name / "vault.parquet").select("handle", "row")
        table = (outcome.rows.filter(pl.col("partner") == name).join(rows, on="handle")
                 .join(voters, on="ref_handle", how="left").sort("row"))
        found[name] = list(zip(table["voter"].to_list(), table["rule"].to_list()))
        registered[name] = table["registered"].to_list()
    return found, outcome.key_stats, registered


def test_a_namesake_born_in_another_year_is_not_linked(links):
    found, stats, _ = links
    assert found["a"][0] == (None, None)
    assert found["a"][3] == ("V2", "name_zip")  # same birth year, another day: the year key agrees
    assert stats["a"]["name_zip"].contradicted == 1


def test_the_contradiction_holds_for_rows_sharing_the_email(links):
    found, stats, _ = links
    assert found["b"][0] == (None, None)  # no birth date of its own; its email's other row was contradicted
    assert found["b"][1] == ("V2", "name_zip")  # no birth date anywhere: nothing to contradict
    assert stats["b"]["name_zip"].contradicted == 2


def test_a_contradicted_row_does_not_take_the_voter_through_a_shared_contact(links):
    found, _, registered = links
    assert found["a"][4] == ("V1", "name_zip")
    assert found["b"][4] == (None, None)  # shares Jane's phone, but its own birth year is not hers
    assert registered["b"][4] is False  # nor is it counted as her person
    assert registered["b"][0] is False and registered["a"][0] is False


def test_a_household_phone_links_no_persons(links):
    found, _, _ = links
    assert found["a"][1] == ("V3", "name_zip")
    assert found["b"][2] == (None, None)  # shares only Ada's household line (held by V3 and V4)
    assert found["b"][3] == ("V5", SHARED_CONTACT)  # shares Ida's own phone


def test_a_key_that_checks_only_links_no_row(tmp_path):
    """Names and birth year first, as a check only: the row born in the voter's year links by names and zip
    code, the namesake born in another year by nothing."""
    keys = [{**KEYS[3], "checks_only": True}, KEYS[2]]
    lists = {"c": LISTS["a"].head(4)}  # Jane Doe's namesake, Ada, Ida, John Roe (born in his voter's year)
    found, stats, _ = _cascade(tmp_path, keys, VOTERS, lists)
    assert found["c"][0] == (None, None) and found["c"][3] == ("V2", "name_zip")
    assert stats["c"]["name_year_zip"].matched == 0 and stats["c"]["name_zip"].contradicted == 1
    inputs = load_inputs([tmp_path / "b" / "ref"], [tmp_path / "b" / "c"])  # a further reference, an opt-out list
    plain = cascade(inputs.partners[0], reference_index(inputs.primary)[0], inputs.primary.key_names)
    assert plain.keys["name_year_zip"].matched == 0 and plain.keys["name_zip"].matched > 0
    with pytest.raises(ValueError, match="no key lists it in checked_by"):
        MatchSpec.model_validate({"keys": [{**KEYS[3], "checks_only": True}, KEYS[4]]})
    unset = MatchSpec.model_validate({"keys": KEYS})
    assert MatchSpec.model_validate({"keys": [{**KEYS[0], "checks_only": False}, *KEYS[1:]]}).digest() == unset.digest()


@pytest.mark.parametrize(("checked_by", "message"), [
    (["nope"], "not another key"),
    (["name_zip"], "not another key"),
    (["plain"], "lacks some of its variants"),
])
def test_checking_keys_are_validated(checked_by, message):
    keys = [{**KEYS[2], "checked_by": checked_by}, KEYS[3], {"name": "plain", "fields": ["first_canon", "dob"]}]
    with pytest.raises(ValueError, match=message):
        MatchSpec.model_validate({"keys": keys})


def test_checks_enter_the_digest_of_specs_that_have_them_only():
    """Specs written before checking keys existed keep their digest (and their bundles stay joinable)."""
    plain = [{k: v for k, v in key.items() if k != "checked_by"} for key in KEYS]
    assert MatchSpec.model_validate({"keys": plain}).digest() != MatchSpec.model_validate({"keys": KEYS}).digest()
    assert "checked_by" not in MatchSpec.model_validate({"keys": plain}).keys[2].model_dump(exclude_none=True)


def test_a_row_refused_several_voters_takes_none_of_them_through_a_shared_contact(tmp_path):
    """Ida (a3) and the row b4 share Ida's own phone: b4 is her person, unless a checking key refused it
    Ida's voter, be it the only voter refused or one of several."""
    _cascade(tmp_path, KEYS, VOTERS, LISTS)
    inputs = load_inputs([tmp_path / "b" / "ref"], [tmp_path / "b" / n for n in LISTS])

    def index(bundle, vault, column, value, name):
        handles = bundle.scan().select("handle").collect().with_row_index(name)
        return handles.join(pl.read_parquet(vault).filter(pl.col(column) == value), on="handle")[name].item()

    ida = index(inputs.primary, tmp_path / "v" / "ref" / "vault.parquet", "id", "V5", "ref_idx")
    jane = index(inputs.primary, tmp_path / "v" / "ref" / "vault.parquet", "id", "V1", "ref_idx")
    a3 = index(inputs.partners[0], tmp_path / "v" / "a" / "vault.parquet", "row", 3, "p_idx")
    b4 = index(inputs.partners[1], tmp_path / "v" / "b" / "vault.parquet", "row", 4, "p_idx")
    rows = pl.DataFrame({"partner": ["a", "b"], "p_idx": [a3, b4], "ref_idx": [ida, None]},
                        schema={"partner": pl.String, "p_idx": pl.UInt32, "ref_idx": pl.UInt32})
    partners = {p.name: p for p in inputs.partners}

    def person_of_b4(refused):
        frame = pl.DataFrame({"partner": ["b"] * len(refused), "p_idx": [b4] * len(refused), "ref_idx": refused},
                             schema={"partner": pl.String, "p_idx": pl.UInt32, "ref_idx": pl.UInt32})
        return resolve_persons(rows, partners, inputs.primary, frame)[1]

    assert person_of_b4([]) == ida
    assert person_of_b4([jane]) == ida
    assert person_of_b4([ida]) != ida
    assert person_of_b4([jane, ida]) != ida and person_of_b4([ida, jane]) != ida
