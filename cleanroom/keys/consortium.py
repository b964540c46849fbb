"""The consortium document: members, policy, epoch; signed by the convenor, accepted by all.

A document is immutable: rotation and membership changes make a new document
for the next epoch that names the digest of the previous one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import blake3
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cleanroom.errors import InputError, KeyMaterialError, SpecError, VerificationError
from cleanroom.fsutil import write_atomic
from cleanroom.keys.identity import (
    CardMismatchError,
    Identity,
    IdentityCard,
    canonical_json,
    signing_payload,
)
from cleanroom.keys.relay import Relay, RelayError, ceremony_topic

CONSORTIUM_FORMAT = "cleanroom-consortium/1"
ACCEPT_FORMAT = "cleanroom-accept/1"
DIGEST_CONTEXT = "cleanroom 2026-11 consortium document digest v1"
# the same rule as consortium ids in key files (cleanroom.keys.secret)
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ATTRIBUTE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_HEX = re.compile(r"^(?:[0-9a-f]{2})+$")


class Policy(BaseModel):
    """What every release of the consortium must respect."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    k: int = Field(default=10, ge=2, description="minimum released cell size")
    epsilon_budget: float | None = Field(
        default=5.0, gt=0, description="differential-privacy epsilon per epoch; None = no DP"
    )
    epsilon_per_report: float = Field(default=0.5, gt=0, description="epsilon each report costs")
    match_spec_digest: str | None = Field(default=None, description="hex digest of the match spec")
    clear_attributes: tuple[str, ...] = Field(
        default=(), description="attributes a reference bundle may carry in the clear"
    )

    @field_validator("match_spec_digest")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not (_HEX.match(value) and 16 <= len(value) <= 128):
            raise ValueError("must be 8-64 bytes as lowercase hex")
        return value

    @field_validator("clear_attributes")
    @classmethod
    def _attributes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _ATTRIBUTE_PATTERN.match(name):
                raise ValueError("attribute names are lowercase letters, digits and '_'")
        return tuple(sorted(set(value)))


class ConsortiumBody(BaseModel):
    """The signed content of a consortium document."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = CONSORTIUM_FORMAT
    consortium_id: str
    epoch: int = Field(ge=0)
    created_at: str
    convenor: str
    members: tuple[IdentityCard, ...]
    policy: Policy
    previous_digest: str | None = None

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value != CONSORTIUM_FORMAT:
            raise ValueError(f"must be {CONSORTIUM_FORMAT}")
        return value

    @field_validator("consortium_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not _ID_PATTERN.match(value):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-'")
        return value

    @model_validator(mode="after")
    def _members(self) -> ConsortiumBody:
        fps = [m.fingerprint for m in self.members]
        if len(fps) < 2:
            raise ValueError("a consortium needs at least two members")
        if fps != sorted(set(fps)):
            raise ValueError("members must be unique and sorted by fingerprint")
        if len({m.name for m in self.members}) != len(fps):
            raise ValueError("member names must be unique")
        if self.convenor not in fps:
            raise ValueError("the convenor must be a member")
        return self


class Consortium(BaseModel):
    """A consortium document: the body and the convenor's signature over it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    body: ConsortiumBody
    signature: str

    @property
    def consortium_id(self) -> str:
        return self.body.consortium_id

    @property
    def epoch(self) -> int:
        return self.body.epoch

    @property
    def members(self) -> tuple[IdentityCard, ...]:
        return self.body.members

    @property
    def policy(self) -> Policy:
        return self.body.policy

    @property
    def digest(self) -> str:
        """BLAKE3 digest (hex) of the body; members compare it out of band."""
        return blake3.blake3(
            canonical_json(self.body.model_dump(mode="json")), derive_key_context=DIGEST_CONTEXT
        ).hexdigest()

    @property
    def topic(self) -> str:
        return ceremony_topic(self.consortium_id, self.epoch)

    def member(self, fingerprint: str) -> IdentityCard:
        for card in self.members:
            if card.fingerprint == fingerprint:
                return card
        raise VerificationError(f"{fingerprint[:8]} is not a member of {self.consortium_id}")

    def name_of(self, fingerprint: str) -> str:
        """A member's name, or a short placeholder for a non-member (for messages)."""
        for card in self.members:
            if card.fingerprint == fingerprint:
                return card.name
        return "a non-member"

    def verify(self) -> None:
        """Check the convenor's signature over the body."""
        convenor = self.member(self.body.convenor)
        try:
            signature = bytes.fromhex(self.signature)
        except ValueError:
            raise VerificationError(f"consortium {self.consortium_id}: malformed signature") from None
        try:
            convenor.verify(signing_payload(CONSORTIUM_FORMAT, self.body.model_dump(mode="json")), signature)
        except VerificationError:
            raise VerificationError(
                f"consortium {self.consortium_id} epoch {self.epoch}: the convenor's signature "
                "does not verify (the document was changed)"
            ) from None

    def require_member(self, identity: Identity) -> IdentityCard:
        """The document's card for `identity`; CardMismatchError if its card changed."""
        mine = identity.card
        for card in self.members:
            if card.fingerprint == mine.fingerprint:
                return card
        if any(card.name == mine.name for card in self.members):
            raise CardMismatchError(
                f"identity {mine.name} has fingerprint {mine.short}, but consortium "
                f"{self.consortium_id} lists another card under that name; ask the convenor "
                "for a new epoch with your current card"
            )
        raise VerificationError(f"identity {mine.name} is not a member of {self.consortium_id}")

    def save(self, path: Path) -> None:
        write_atomic(Path(path), self.model_dump_json(indent=2).encode() + b"\n")


def parse_consortium(data: bytes | str, label: str = "consortium document") -> Consortium:
    """Validate a consortium document and its convenor signature."""
    try:
        raw = json.loads(data)
    except ValueError:
        raise VerificationError(f"{label} is not JSON") from None
    members = raw.get("body", {}).get("members") if isinstance(raw, dict) else None
    for i, card in enumerate(members if isinstance(members, list) else []):
        IdentityCard.parse(card, label=f"{label}: member card {i + 1}")
    try:
        doc = Consortium.model_validate(raw)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
        raise VerificationError(f"{label} is invalid ({fields})") from None
    doc.verify()
    return doc


def load_consortium(path: Path) -> Consortium:
    """Read and verify a consortium document file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError:
        raise InputError(f"consortium file {path.name} cannot be read") from None
    return parse_consortium(data, label=f"consortium file {path.name}")


def _sign_body(convenor: Identity, body: ConsortiumBody) -> Consortium:
    payload = signing_payload(CONSORTIUM_FORMAT, body.model_dump(mode="json"))
    return Consortium(body=body, signature=convenor.sign(payload).hex())


def _make_body(**fields: Any) -> ConsortiumBody:
    try:
        return ConsortiumBody(**fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'consortium'}: {e['msg']}" for e in exc.errors()
        )
        raise SpecError(f"invalid consortium: {problems}") from None


def _write_new(doc: Consortium, out: Path) -> None:
    if Path(out).exists():
        raise InputError(f"{Path(out).name} already exists; choose another output file")
    doc.save(out)


def init_consortium(
    consortium_id: str,
    convenor: Identity,
    members: Iterable[IdentityCard],
    out: Path,
    *,
    epoch: int = 0,
    policy: Policy | None = None,
) -> Consortium:
    """Create and sign a consortium document; the convenor's card is always a member."""
    cards = {c.fingerprint: c for c in [*members, convenor.card]}
    body = _make_body(
        consortium_id=consortium_id,
        epoch=epoch,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        convenor=convenor.card.fingerprint,
        members=tuple(cards[fp] for fp in sorted(cards)),
        policy=policy or Policy(),
    )
    doc = _sign_body(convenor, body)
    _write_new(doc, out)
    return doc


def rotate_consortium(
    previous: Consortium,
    convenor: Identity,
    out: Path,
    *,
    remove: Iterable[str] = (),
    add: Iterable[IdentityCard] = (),
    policy: Policy | None = None,
) -> Consortium:
    """The next epoch's document: same members minus `remove` (names) plus `add` (cards)."""
    remove = set(remove)
    unknown = remove - {c.name for c in previous.members}
    if unknown:
        raise InputError(f"not a member of {previous.consortium_id}: {', '.join(sorted(unknown))}")
    cards = {c.fingerprint: c for c in previous.members if c.name not in remove}
    cards.update({c.fingerprint: c for c in add})
    if convenor.card.fingerprint not in cards:
        raise InputError(f"the convenor {convenor.card.name} must be a member of the new epoch")
    body = _make_body(
        consortium_id=previous.consortium_id,
        epoch=previous.epoch + 1,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        convenor=convenor.card.fingerprint,
        members=tuple(cards[fp] for fp in sorted(cards)),
        policy=policy or previous.policy,
        previous_digest=previous.digest,
    )
    doc = _sign_body(convenor, body)
    _write_new(doc, out)
    return doc


class Acceptance(BaseModel):
    """A member's countersignature of one consortium document, published on the relay."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = ACCEPT_FORMAT
    consortium_id: str
    epoch: int
    consortium_digest: str
    member: str
    signature: str = ""

    def payload(self) -> bytes:
        return signing_payload(ACCEPT_FORMAT, self.model_dump(exclude={"signature"}))


def acceptance_name(member_fingerprint: str) -> str:
    return f"accept.{member_fingerprint}.json"


def accept_consortium(consortium: Consortium, identity: Identity, relay: Relay) -> Acceptance:
    """Countersign the document and publish the acceptance on the relay."""
    consortium.verify()
    card = consortium.require_member(identity)
    unsigned = Acceptance(
        consortium_id=consortium.consortium_id,
        epoch=consortium.epoch,
        consortium_digest=consortium.digest,
        member=card.fingerprint,
    )
    signed = unsigned.model_copy(update={"signature": identity.sign(unsigned.payload()).hex()})
    try:
        relay.put(consortium.topic, acceptance_name(card.fingerprint), canonical_json(signed.model_dump()))
    except RelayError:
        raise KeyMaterialError(
            f"{card.name} already accepted a different document for {consortium.consortium_id} "
            f"epoch {consortium.epoch}"
        ) from None
    return signed


def check_acceptance(consortium: Consortium, card: IdentityCard, data: bytes) -> None:
    """Verify one member's published acceptance of exactly this document."""
    try:
        acc = Acceptance.model_validate_json(data)
        signature = bytes.fromhex(acc.signature)
    except (ValidationError, ValueError):
        raise VerificationError(f"the acceptance by {card.name} is malformed") from None
    if acc.member != card.fingerprint:
        raise VerificationError(f"the acceptance filed for {card.name} is by someone else")
    card.verify(acc.payload(), signature)
    if (acc.consortium_id, acc.epoch, acc.consortium_digest) != (
        consortium.consortium_id,
        consortium.epoch,
        consortium.digest,
    ):
        raise VerificationError(
            f"{card.name} accepted a different consortium document (compare digests out of band)"
        )


def require_same_epoch(items: Iterable[tuple[str, str, int, str]]) -> None:
    """Refuse to mix bundles: every (label, consortium_id, epoch, key fingerprint) must agree.

    The first item is the reference; the error names the first label that disagrees.
    """
    reference: tuple[str, str, int, str] | None = None
    for label, consortium_id, epoch, key_fingerprint in items:
        if reference is None:
            reference = (label, consortium_id, epoch, key_fingerprint)
            continue
        ref_label, ref_id, ref_epoch, ref_fp = reference
        if consortium_id != ref_id:
            raise VerificationError(
                f"{label} is from consortium {consortium_id}, but {ref_label} is from {ref_id}"
            )
        if epoch != ref_epoch:
            raise VerificationError(
                f"{label} is from epoch {epoch}, but {ref_label} is from epoch {ref_epoch}; "
                "re-hash with the current key"
            )
        if key_fingerprint != ref_fp:
            raise VerificationError(
                f"{label} was hashed with key {key_fingerprint[:8]}, but {ref_label} "
                f"with key {ref_fp[:8]} (same consortium and epoch: a ceremony went wrong)"
            )
