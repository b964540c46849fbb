"""Match spec: which columns are which fields, and which field tuples become keys.

A spec is validated once, on load; the rest of the code only sees valid specs.
Its digest covers everything that changes token values (keys, generic fields,
phone region, normalizer versions) and nothing partner-specific (column names),
so partners with different layouts produce joinable bundles.
"""

from __future__ import annotations

import itertools
import json
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated

import blake3
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cleanroom import normalize
from cleanroom.errors import SpecError

_NAME = r"^[a-z][a-z0-9_]{0,62}$"
Name = Annotated[str, Field(pattern=_NAME)]

# Common column headers and the field type they mean (after lowercasing and
# turning non-alphanumerics into "_"; a trailing number such as email_2 is ignored).
_COLUMN_ALIASES = {
    "e_mail": "email", "email_address": "email", "e_mail_address": "email", "mail": "email",
    "phone_number": "phone", "mobile": "phone", "cell": "phone", "telephone": "phone",
    "first": "first_name", "firstname": "first_name", "given_name": "first_name",
    "middle": "middle_name", "middlename": "middle_name",
    "last": "last_name", "lastname": "last_name", "surname": "last_name",
    "family_name": "last_name",
    "date_of_birth": "dob", "birth_date": "dob", "birthdate": "dob",
    "zip_code": "zip", "zipcode": "zip", "postal_code": "zip", "postcode": "zip",
    "street_address": "address", "address1": "address", "address_line_1": "address",
}


PARTIAL_DOB = "dob_partial"
NAME_VARIANTS = ("swap_names", "email_names")  # other readings of the name fields
DOB_VARIANTS = ("dob_dm_swap", PARTIAL_DOB)
NICKNAMES = "nicknames"
VARIANTS = (*NAME_VARIANTS, *DOB_VARIANTS, NICKNAMES, "deletions")
"""Error-tolerant variants a key may add as extra tokens of the same key:
swap_names (first and last name exchanged), email_names (the names an email
address spells as first.last or first_last, or run together beside the row's
own last or first name), dob_dm_swap (day and month exchanged), dob_partial
(the birth date with its day, its month or its year unknown: one wrong part;
not with dob_dm_swap in one key, so that the scorer can tell the two apart),
nicknames (the canonical first name also read paired with each name the
nickname table links to its group: Bill meets Robert, Sam meets Samuel; keys
with first_canon), deletions:<field> (every single-character deletion of one
field, so two values within one insert, delete, substitute or transpose share
a token)."""

VARIANT_VERSIONS = {"email_names": "2", "deletions:first_canon": "2"}
"""Variants whose readings changed, by version (part of the spec digest of specs using them): email_names 2
reads names run together (johnsmith beside the row's last name Smith); deletions:first_canon 2 takes the
deletions of the first name as written too (a typo in John does not reach John's canonical form)."""

VARIANT_FIELDS = {"street_name": "street"}
"""Derived fields that are error-tolerant variants of another field, used in keys
like any field: street_name is the street without its suffix and directionals
("N Main St", "Main Ave" and "Main" share it). A spec whose keys leave such a
field out switches its family off: it is then not even derived. A key set does
not combine a field with its variant (the street implies its name)."""


class MatchKey(BaseModel):
    """One match key: an ordered tuple of derived fields hashed together, plus variants."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    fields: list[Name] = Field(min_length=1)
    variants: list[str] = Field(default_factory=list)
    max_expected_holders: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Rare values only: the reference carries the key's tokens on a row only when the rows expected to share
    the row's values (its row count times the product of each value's share of its rows, the fields taken as
    independent) are at most this many. A key of names alone then links only rare names, which an unregistered
    namesake seldom shares. A partner list drops them where it expects the values on more than one of its own
    rows (`hashing.PARTNER_MIN_BAR`), so the values a frequency count could read stay out of the broker's counts."""

    checked_by: list[Name] | None = None
    """Keys that can contradict a link by this key: a hit is not taken when the partner row and the reference
    row both carry tokens of a checking key and share none, so a field the checking key adds (a birth year)
    disagrees; nor by any later key, nor for rows sharing an email with the contradicted row (one person). A
    checking key reads at least this key's variants."""

    checks_only: bool | None = None
    """True: the key links no rows in the cascade, it only checks the keys naming it in `checked_by` (its
    tokens are too common to link on: both names and a partial birth date meet namesakes in a state-sized
    file). The scorer still reads its agreement like any key's. False is stored as None (the digest)."""

    @field_validator("checks_only")
    @classmethod
    def _false_is_unset(cls, value: bool | None) -> bool | None:
        return value or None

    @model_validator(mode="after")
    def _check_variants(self) -> MatchKey:
        for variant in self.variants:
            kind, _, field = variant.partition(":")
            if kind not in VARIANTS:
                raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
            if (kind == "deletions") != bool(field) or (field and field not in self.fields):
                raise ValueError(f"variant {variant!r}: write deletions:<one of the key's fields>")
        if sum(v.startswith("deletions") for v in self.variants) > 1:
            raise ValueError("a key takes deletions on at most one field")
        if "swap_names" in self.variants and not _has_both_names(self.fields):
            raise ValueError("swap_names exchanges first and last name: put it on a key with both (on a key with "
                             "one, two rows' first names would meet as its last name)")
        if NICKNAMES in self.variants and "first_canon" not in self.fields:
            raise ValueError("the nicknames variant reads first_canon: put it on a key with that field")
        if {PARTIAL_DOB, "dob_dm_swap"} <= set(self.variants):
            raise ValueError("dob_partial and dob_dm_swap go in separate keys (the scorer tells them apart by key)")
        return self


class KeySet(BaseModel):
    """Generates one key per combination of `choose` of `fields` (many keys, not weaker keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    fields: list[Name] = Field(min_length=2)
    choose: int = Field(ge=1)
    include: list[Name] = Field(default_factory=list)
    """Fields every generated combination must contain."""
    variants: list[str] = Field(default_factory=list)

    def expand(self) -> list[MatchKey]:
        """One key per combination; each variant only where it applies to that combination."""
        keys = []
        for combo in itertools.combinations(self.fields, self.choose):
            if not set(self.include) <= set(combo):
                continue
            if any(VARIANT_FIELDS.get(f) in combo for f in combo):
                continue
            applicable = [
                v for v in self.variants
                if (v.partition(":")[2] or "") in ("", *combo)
                and not (v in NAME_VARIANTS and not _has_name(combo))
                and not (v == "swap_names" and not _has_both_names(combo))
                and not (v in DOB_VARIANTS and "dob" not in combo)
                and not (v == NICKNAMES and "first_canon" not in combo)
            ]
            keys.append(MatchKey(name=f"{self.name}_{'_'.join(combo)}"[:63], fields=list(combo), variants=applicable))
        return keys


def _has_name(fields: tuple[str, ...]) -> bool:
    return any(f.startswith(("first", "last")) for f in fields)


def _has_both_names(fields: tuple[str, ...] | list[str]) -> bool:
    return any(f.startswith("first") for f in fields) and any(f.startswith("last") for f in fields)


class MatchSpec(BaseModel):
    """Column mapping, ordered match keys and the clear attributes a bundle may carry."""

    model_config = ConfigDict(extra="forbid")

    name: str = "custom"
    default_region: str = Field("US", pattern=r"^[A-Z]{2}$")
    columns: dict[str, str] = Field(default_factory=dict)
    generic_fields: list[Name] = Field(default_factory=list)
    keys: list[MatchKey] = Field(default_factory=list)
    key_sets: list[KeySet] = Field(default_factory=list)
    allowed_attributes: list[Name] = Field(default_factory=list)

    @property
    def all_keys(self) -> list[MatchKey]:
        """Explicit keys in order, then the keys every key set generates."""
        return [*self.keys, *[k for key_set in self.key_sets for k in key_set.expand()]]

    @model_validator(mode="after")
    def _check_consistency(self) -> MatchSpec:
        types = set(normalize.FIELD_TYPES) - {"generic"}
        clash = sorted(set(self.generic_fields) & (types | derived_fields()))
        if clash:
            raise ValueError(f"generic_fields: {clash[0]!r} is already a built-in field")
        for column, field in self.columns.items():
            if field not in types and field not in self.generic_fields:
                raise ValueError(
                    f"columns: column {column!r} maps to unknown field type {field!r}"
                )
        for key_set in self.key_sets:
            if key_set.choose > len(key_set.fields):
                raise ValueError(f"key_sets ({key_set.name}): choose exceeds the number of fields")
        keys = self.all_keys
        if not keys:
            raise ValueError("keys: the spec needs at least one key or key set")
        names = [key.name for key in keys]
        if len(set(names)) != len(names):
            raise ValueError("keys: key names must be unique")
        known = derived_fields() | set(self.generic_fields)
        for index, key in enumerate(keys):
            for field in key.fields:
                if field not in known:
                    raise ValueError(f"keys[{index}] ({key.name}): unknown field {field!r}")
            if len(set(key.fields)) != len(key.fields):
                raise ValueError(f"keys[{index}] ({key.name}): a field is repeated")
        by_name = {key.name: key for key in keys}
        checking = {name for key in keys for name in key.checked_by or []}
        for index, key in enumerate(keys):
            if key.checks_only and key.name not in checking:
                raise ValueError(f"keys[{index}] ({key.name}): checks_only, but no key lists it in checked_by, "
                                 "so it would neither link nor check")
            for name in key.checked_by or []:
                check = by_name.get(name)
                if check is None or check is key:
                    raise ValueError(f"keys[{index}] ({key.name}): checked_by names {name!r}, not another key")
                if not set(key.variants) <= set(check.variants):
                    raise ValueError(f"keys[{index}] ({key.name}): checking key {name!r} lacks some of its variants")
        return self

    def digest(self) -> str:
        """BLAKE3 of everything that determines token values (hex)."""
        body = {
            "default_region": self.default_region,
            "generic_fields": sorted(self.generic_fields),
            # without exclude_none a key without max_expected_holders would hash differently than before it existed
            "keys": [key.model_dump(exclude_none=True) for key in self.all_keys],
            "normalizers": normalize.versions(),
        }
        used = {w for key in self.all_keys for v in key.variants for w in (v, v.partition(":")[0])}
        if used & set(VARIANT_VERSIONS):  # digests of specs without a changed variant stay as they were
            body["variants"] = {v: VARIANT_VERSIONS[v] for v in sorted(used & set(VARIANT_VERSIONS))}
        return blake3.blake3(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def with_columns(self, columns: dict[str, str]) -> MatchSpec:
        """The same spec with another column mapping (validated)."""
        return _validated({**self.model_dump(), "columns": columns}, "--map")

    def resolve_columns(self, available: list[str]) -> dict[str, str]:
        """Column -> field type for an input with these columns.

        An explicit mapping must name existing columns; without one, columns are
        recognised by their names (email, email_2, first_name, zip, ...).
        """
        if self.columns:
            missing = [c for c in self.columns if c not in available]
            if missing:
                raise SpecError(
                    f"mapped column {missing[0]!r} is not in the input "
                    f"(it has {len(available)} columns: {', '.join(available[:12])})"
                )
            return dict(self.columns)
        mapping = {c: t for c in available if (t := _field_type_of_header(c, self))}
        if not mapping:
            raise SpecError(
                "no input column is recognised as a field; map them with "
                "--map COLUMN=FIELD or a [columns] table in the spec"
            )
        return mapping


def derived_fields() -> set[str]:
    """Every derived field name the normalizers can produce."""
    return {f for produced in normalize.FIELD_TYPES.values() for f in produced}


def _field_type_of_header(header: str, spec: MatchSpec) -> str | None:
    name = re.sub(r"[^a-z0-9]+", "_", header.strip().lower()).strip("_")
    name = re.sub(r"_?\d+$", "", name) or name
    name = _COLUMN_ALIASES.get(name, name)
    if name in normalize.FIELD_TYPES and name != "generic":
        return name
    return name if name in spec.generic_fields else None


def _validated(data: object, source: str) -> MatchSpec:
    try:
        return MatchSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "spec"
        raise SpecError(f"invalid spec {source}: {where}: {first['msg']}") from None


def load_spec(path: Path | None = None) -> MatchSpec:
    """Load and validate a TOML spec; the packaged default when `path` is None."""
    if path is None:
        text = resources.files("cleanroom.data").joinpath("default_spec.toml").read_text()
        source = "(default)"
    else:
        path = Path(path)
        source = path.name
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise SpecError(f"cannot read spec file {source}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"spec file {source} is not valid TOML: {exc}") from None
    return _validated(data, source)


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """Parse repeated `COLUMN=FIELD` options."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, field = pair.rpartition("=")
        if not sep or not column.strip() or not field.strip():
            raise SpecError("--map takes COLUMN=FIELD, e.g. --map 'E-mail=email'")
        mapping[column.strip()] = field.strip()
    return mapping
