"""Match spec: the shipped default, validation errors that name the field, column mapping."""

from pathlib import Path

import pytest

from cleanroom.errors import SpecError
from cleanroom.spec import (
    VARIANT_FIELDS,
    KeySet,
    MatchSpec,
    derived_fields,
    load_spec,
    parse_mapping,
)

EXAMPLE = Path(__file__).parent.parent / "examples" / "default_spec.toml"


def test_example_default_spec_is_the_packaged_one():
    assert load_spec(EXAMPLE) == load_spec()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[[keys]]\nname = "k"\nfields = ["shoe_size"]\n', "unknown field"),
        ('[[keys]]\nname = "k"\nfields = ["email"]\n[[keys]]\nname = "k"\nfields = ["phone"]\n', "unique"),
        ('[[keys]]\nname = "k"\nfields = ["email"]\nvariants = ["teleport"]\n', "unknown variant"),
        ('[columns]\n"E-mail" = "favourite_colour"\n[[keys]]\nname = "k"\nfields = ["email"]\n', "columns"),
        ('default_region = "usa"\n[[keys]]\nname = "k"\nfields = ["email"]\n', "default_region"),
        ('[[key_sets]]\nname = "c"\nfields = ["first", "last"]\nchoose = 3\n', "choose"),
    ],
)
def test_invalid_specs_name_the_problem(tmp_path, text, named):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match=named):
        load_spec(path)


def test_digest_ignores_column_layout_but_not_keys():
    spec = load_spec()
    assert spec.with_columns({"E-mail": "email"}).digest() == spec.digest()
    fewer = MatchSpec(keys=spec.keys[:2])
    assert fewer.digest() != spec.digest()


def test_columns_are_recognised_by_name():
    mapping = load_spec().resolve_columns(["E-mail Address", "Email 2", "First", "Surname", "ZIP Code", "Notes"])
    assert mapping == {"E-mail Address": "email", "Email 2": "email", "First": "first_name",
                       "Surname": "last_name", "ZIP Code": "zip"}
    with pytest.raises(SpecError):
        load_spec().resolve_columns(["Notes", "Shoe"])
    assert parse_mapping(["E-mail=email"]) == {"E-mail": "email"}
    with pytest.raises(SpecError):
        parse_mapping(["nonsense"])


def test_street_name_is_a_field_and_key_sets_do_not_pair_it_with_the_street():
    assert set(VARIANT_FIELDS) <= derived_fields() and set(VARIANT_FIELDS.values()) <= derived_fields()
    spec = MatchSpec(keys=[{"name": "address_name", "fields": ["zip5", "house_number", "street_name"]}])
    assert spec.all_keys[0].fields == ["zip5", "house_number", "street_name"]
    keys = KeySet(name="a", fields=["last", "zip5", "street", "street_name"], choose=2).expand()
    assert [k.fields for k in keys] == [["last", "zip5"], ["last", "street"], ["last", "street_name"],
                                        ["zip5", "street"], ["zip5", "street_name"]]


def test_rare_value_bar_is_positive_and_part_of_the_digest():
    from cleanroom.spec import MatchSpec

    plain = MatchSpec(keys=[{"name": "names", "fields": ["first", "last"]}])
    gated = MatchSpec(keys=[{"name": "names", "fields": ["first", "last"], "max_expected_holders": 0.5}])
    assert plain.digest() != gated.digest()
    assert plain.digest() == MatchSpec(keys=[{"name": "names", "fields": ["first", "last"],
                                              "max_expected_holders": None}]).digest()
    with pytest.raises(ValueError, match="greater than 0"):
        MatchSpec(keys=[{"name": "names", "fields": ["first", "last"], "max_expected_holders": 0}])
    with pytest.raises(ValueError, match="finite"):
        MatchSpec(keys=[{"name": "names", "fields": ["first", "last"], "max_expected_holders": float("inf")}])


def test_nicknames_variant_needs_the_canonical_first_name():
    from cleanroom.spec import MatchSpec

    with pytest.raises(ValueError, match="first_canon"):
        MatchSpec(keys=[{"name": "k", "fields": ["first", "last"], "variants": ["nicknames"]}])
    key_set = MatchSpec(key_sets=[{"name": "s", "fields": ["first_canon", "last", "zip5"], "choose": 2,
                                   "variants": ["nicknames"]}])
    assert {k.name: k.variants for k in key_set.all_keys} == {
        "s_first_canon_last": ["nicknames"], "s_first_canon_zip5": ["nicknames"], "s_last_zip5": []}
