"""Contributory key ceremony: N members agree on K through an untrusted relay.

Each member draws a 32-byte contribution, seals it to every member's X25519 key
(its own included, so the relay keeps the state between `contribute` and
`finish`), signs each sealed share and puts it on the relay. Each member opens
the shares addressed to it, derives K from all contributions, publishes K's
fingerprint (signed) and writes its key file only when every member's
fingerprint agrees. The relay sees sealed shares, commitments, signatures and
fingerprints; never a contribution or K.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict, ValidationError

from cleanroom.errors import CleanroomError, KeyMaterialError, VerificationError
from cleanroom.keys.consortium import Consortium, acceptance_name, check_acceptance
from cleanroom.keys.identity import Identity, IdentityCard, canonical_json, signing_payload
from cleanroom.keys.relay import Relay, RelayError
from cleanroom.keys.secret import ConsortiumKey, load_key

SHARE_FORMAT = "cleanroom-share/1"
NOTICE_FORMAT = "cleanroom-fingerprint/1"
CEREMONY_FORMAT = b"cleanroom-ceremony/1"
KEY_CONTEXT = "cleanroom 2026-11 consortium key ceremony v1"
COMMITMENT_CONTEXT = "cleanroom 2026-11 ceremony contribution commitment v1"
CONTRIBUTION_BYTES = 32


class CeremonyError(CleanroomError):
    """The ceremony cannot complete; `member` names who is concerned (never secrets)."""

    def __init__(self, message: str, member: str | None = None):
        super().__init__(message)
        self.member = member


class MissingMemberError(CeremonyError):
    """A member has not accepted or contributed yet."""


class ReplayError(CeremonyError, VerificationError):
    """A genuine message from another epoch, consortium or consortium document."""


class MisaddressedShareError(CeremonyError, VerificationError):
    """A share in a member's mailbox is sealed to, or sent by, someone else."""


class TamperedMessageError(CeremonyError, VerificationError):
    """A relay message's signature, associated data, sealing or commitment does not check."""


class FingerprintMismatchError(CeremonyError, VerificationError):
    """Members derived different keys."""


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def derive_key(
    consortium_id: str, epoch: int, consortium_digest: str, contributions: Mapping[str, bytes]
) -> ConsortiumKey:
    """K from every member's contribution (keyed by member fingerprint), in fingerprint order.

    K = BLAKE3 derive_key(KEY_CONTEXT, lp(format) lp(id) u64(epoch) lp(digest) u32(n)
    then lp(fingerprint) lp(contribution) per member sorted by fingerprint), where lp is
    a 4-byte big-endian length prefix and fingerprints and digest are raw bytes.
    """
    if any(len(c) != CONTRIBUTION_BYTES for c in contributions.values()):
        raise KeyMaterialError("every contribution must be 32 bytes")
    material = b"".join(
        [
            _lp(CEREMONY_FORMAT),
            _lp(consortium_id.encode()),
            epoch.to_bytes(8, "big"),
            _lp(bytes.fromhex(consortium_digest)),
            len(contributions).to_bytes(4, "big"),
            *(_lp(bytes.fromhex(fp)) + _lp(contributions[fp]) for fp in sorted(contributions)),
        ]
    )
    secret = blake3.blake3(material, derive_key_context=KEY_CONTEXT).digest()
    return ConsortiumKey(consortium_id=consortium_id, epoch=epoch, secret=secret)


def _commitment(consortium: Consortium, sender: str, contribution: bytes) -> str:
    material = _lp(consortium.digest.encode()) + _lp(sender.encode()) + contribution
    return blake3.blake3(material, derive_key_context=COMMITMENT_CONTEXT).hexdigest()


class SealedShare(BaseModel):
    """One member's contribution sealed to one recipient, signed by the sender."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = SHARE_FORMAT
    consortium_id: str
    epoch: int
    consortium_digest: str
    sender: str
    recipient: str
    commitment: str
    ephemeral_key: str
    nonce: str
    ciphertext: str = ""
    signature: str = ""

    def associated_data(self) -> bytes:
        return canonical_json(self.model_dump(exclude={"ciphertext", "signature"}))

    def payload(self) -> bytes:
        return signing_payload(SHARE_FORMAT, self.model_dump(exclude={"signature"}))


class FingerprintNotice(BaseModel):
    """A member's published fingerprint of the K it derived, signed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = NOTICE_FORMAT
    consortium_id: str
    epoch: int
    consortium_digest: str
    member: str
    key_fingerprint: str
    signature: str = ""

    def payload(self) -> bytes:
        return signing_payload(NOTICE_FORMAT, self.model_dump(exclude={"signature"}))


_M = TypeVar("_M", SealedShare, FingerprintNotice)


def share_name(sender: str, recipient: str) -> str:
    return f"share.{sender}.{recipient}.json"


def notice_name(member: str) -> str:
    return f"fingerprint.{member}.json"


def _share_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    info = SHARE_FORMAT.encode() + ephemeral + recipient
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def _seal(
    consortium: Consortium, sender: Identity, recipient: IdentityCard, contribution: bytes, commitment: str
) -> SealedShare:
    ephemeral = X25519PrivateKey.generate()
    ephemeral_pub = ephemeral.public_key().public_bytes_raw()
    recipient_pub = bytes.fromhex(recipient.agreement_key)
    key = _share_key(ephemeral.exchange(recipient.agreement_public_key()), ephemeral_pub, recipient_pub)
    header = SealedShare(
        consortium_id=consortium.consortium_id,
        epoch=consortium.epoch,
        consortium_digest=consortium.digest,
        sender=sender.card.fingerprint,
        recipient=recipient.fingerprint,
        commitment=commitment,
        ephemeral_key=ephemeral_pub.hex(),
        nonce=secrets.token_bytes(12).hex(),
    )
    ciphertext = ChaCha20Poly1305(key).encrypt(
        bytes.fromhex(header.nonce), contribution, header.associated_data()
    )
    sealed = header.model_copy(update={"ciphertext": ciphertext.hex()})
    return sealed.model_copy(update={"signature": sender.sign(sealed.payload()).hex()})


def _check_signed(consortium: Consortium, model: type[_M], data: bytes, who: str, what: str) -> _M:
    """Parse a relay message, check its signature by `who`, then that it is for this ceremony."""
    name = consortium.name_of(who)
    try:
        message = model.model_validate_json(data)
        signature = bytes.fromhex(message.signature)
    except (ValidationError, ValueError):
        raise TamperedMessageError(f"the {what} from {name} is malformed", member=name) from None
    author = message.sender if isinstance(message, SealedShare) else message.member
    if author != who:
        raise MisaddressedShareError(
            f"the {what} filed under {name} was made by {consortium.name_of(author)}", member=name
        )
    try:
        consortium.member(who).verify(message.payload(), signature)
    except VerificationError:
        raise TamperedMessageError(
            f"the {what} from {name} has a bad signature (changed on the relay?)", member=name
        ) from None
    if (message.consortium_id, message.epoch) != (consortium.consortium_id, consortium.epoch):
        raise ReplayError(
            f"the {what} from {name} was made for {message.consortium_id} epoch {message.epoch}, "
            f"not {consortium.consortium_id} epoch {consortium.epoch}: a replay",
            member=name,
        )
    if message.consortium_digest != consortium.digest:
        raise ReplayError(
            f"the {what} from {name} was made for a different consortium document", member=name
        )
    return message


def _read_share(consortium: Consortium, relay: Relay, sender: str, recipient: str) -> SealedShare:
    data = relay.get(consortium.topic, share_name(sender, recipient))
    share = _check_signed(consortium, SealedShare, data, sender, "share")
    if share.recipient != recipient:
        name = consortium.name_of(sender)
        raise MisaddressedShareError(
            f"the share from {name} in the mailbox of {consortium.name_of(recipient)} is sealed to "
            f"{consortium.name_of(share.recipient)}",
            member=name,
        )
    return share


def _open(consortium: Consortium, identity: Identity, share: SealedShare) -> bytes:
    name = consortium.name_of(share.sender)
    try:
        ephemeral = bytes.fromhex(share.ephemeral_key)
        shared = identity.exchange(ephemeral)
        key = _share_key(shared, ephemeral, bytes.fromhex(identity.card.agreement_key))
        contribution = ChaCha20Poly1305(key).decrypt(
            bytes.fromhex(share.nonce), bytes.fromhex(share.ciphertext), share.associated_data()
        )
    except (InvalidTag, ValueError, VerificationError):
        raise TamperedMessageError(
            f"the share from {name} does not open (tampered, or sealed to another key)", member=name
        ) from None
    if len(contribution) != CONTRIBUTION_BYTES or _commitment(
        consortium, share.sender, contribution
    ) != share.commitment:
        raise TamperedMessageError(f"the share from {name} does not match its commitment", member=name)
    return contribution


def _require_accepted(consortium: Consortium, relay: Relay) -> None:
    present = set(relay.list(consortium.topic))
    missing = [c.name for c in consortium.members if acceptance_name(c.fingerprint) not in present]
    if missing:
        raise MissingMemberError(
            f"not yet accepted by: {', '.join(missing)} (each runs `cleanroom consortium accept`)",
            member=missing[0],
        )
    for card in consortium.members:
        check_acceptance(consortium, card, relay.get(consortium.topic, acceptance_name(card.fingerprint)))


def contribute(consortium: Consortium, identity: Identity, relay: Relay) -> str:
    """Seal a fresh contribution to every member and put the shares on the relay.

    Requires every member's acceptance of this exact document. Returns the commitment.
    """
    consortium.verify()
    me = consortium.require_member(identity)
    _require_accepted(consortium, relay)
    present = set(relay.list(consortium.topic))
    if any(share_name(me.fingerprint, c.fingerprint) in present for c in consortium.members):
        raise KeyMaterialError(
            f"{me.name} already contributed to {consortium.consortium_id} epoch {consortium.epoch}"
        )
    contribution = secrets.token_bytes(CONTRIBUTION_BYTES)
    commitment = _commitment(consortium, me.fingerprint, contribution)
    for card in consortium.members:
        share = _seal(consortium, identity, card, contribution, commitment)
        try:
            relay.put(consortium.topic, share_name(me.fingerprint, card.fingerprint), canonical_json(share.model_dump()))
        except RelayError as exc:
            raise KeyMaterialError(f"{me.name} could not publish its shares: {exc}") from None
    return commitment


class MemberStatus(BaseModel):
    """One member's progress, from public relay messages only."""

    name: str
    fingerprint: str
    accepted: bool
    shares: int
    finished: bool
    key_fingerprint: str | None
    problems: list[str]


class CeremonyStatus(BaseModel):
    """Where a ceremony stands; `complete` only when every fingerprint is in and agrees."""

    consortium_id: str
    epoch: int
    consortium_digest: str
    members: list[MemberStatus]
    agreed_fingerprint: str | None
    complete: bool


def status(consortium: Consortium, relay: Relay) -> CeremonyStatus:
    """Public progress of the ceremony; verifies every message but opens none."""
    consortium.verify()
    present = set(relay.list(consortium.topic))
    rows = []
    for card in consortium.members:
        problems: list[str] = []
        accepted = acceptance_name(card.fingerprint) in present
        if accepted:
            try:
                check_acceptance(consortium, card, relay.get(consortium.topic, acceptance_name(card.fingerprint)))
            except CleanroomError as exc:
                accepted = False
                problems.append(str(exc))
        commitments = set()
        for other in consortium.members:
            if share_name(card.fingerprint, other.fingerprint) in present:
                try:
                    share = _read_share(consortium, relay, card.fingerprint, other.fingerprint)
                    commitments.add(share.commitment)
                except CleanroomError as exc:
                    problems.append(str(exc))
        if len(commitments) > 1:
            problems.append(f"{card.name} sent different contributions to different members")
        key_fp = None
        if notice_name(card.fingerprint) in present:
            try:
                notice = _check_signed(
                    consortium, FingerprintNotice,
                    relay.get(consortium.topic, notice_name(card.fingerprint)), card.fingerprint, "fingerprint",
                )
                key_fp = notice.key_fingerprint
            except CleanroomError as exc:
                problems.append(str(exc))
        rows.append(
            MemberStatus(
                name=card.name,
                fingerprint=card.fingerprint,
                accepted=accepted,
                shares=sum(share_name(card.fingerprint, o.fingerprint) in present for o in consortium.members),
                finished=key_fp is not None,
                key_fingerprint=key_fp,
                problems=problems,
            )
        )
    fingerprints = {r.key_fingerprint for r in rows}
    agreed = next(iter(fingerprints)) if len(fingerprints) == 1 else None
    return CeremonyStatus(
        consortium_id=consortium.consortium_id,
        epoch=consortium.epoch,
        consortium_digest=consortium.digest,
        members=rows,
        agreed_fingerprint=agreed,
        complete=agreed is not None and not any(r.problems for r in rows),
    )


class FinishResult(BaseModel):
    """Outcome of `finish`: the key file is written only when `complete`."""

    key_fingerprint: str
    complete: bool
    waiting_for: list[str]
    key_file: Path | None


def _open_mailbox(consortium: Consortium, identity: Identity, relay: Relay) -> dict[str, bytes]:
    present = set(relay.list(consortium.topic))
    me = identity.card.fingerprint
    missing = [
        c.name for c in consortium.members if share_name(c.fingerprint, me) not in present
    ]
    if missing:
        raise MissingMemberError(
            f"no share yet from: {', '.join(missing)} (each runs `cleanroom ceremony contribute`)",
            member=missing[0],
        )
    contributions = {}
    for card in consortium.members:
        share = _read_share(consortium, relay, card.fingerprint, me)
        contributions[card.fingerprint] = _open(consortium, identity, share)
        # every share this sender published must carry the same commitment
        for other in consortium.members:
            if share_name(card.fingerprint, other.fingerprint) in present:
                peer = _read_share(consortium, relay, card.fingerprint, other.fingerprint)
                if peer.commitment != share.commitment:
                    raise TamperedMessageError(
                        f"{card.name} sent different contributions to different members",
                        member=card.name,
                    )
    return contributions


def _publish_notice(consortium: Consortium, identity: Identity, relay: Relay, key_fingerprint: str) -> None:
    unsigned = FingerprintNotice(
        consortium_id=consortium.consortium_id,
        epoch=consortium.epoch,
        consortium_digest=consortium.digest,
        member=identity.card.fingerprint,
        key_fingerprint=key_fingerprint,
    )
    notice = unsigned.model_copy(update={"signature": identity.sign(unsigned.payload()).hex()})
    try:
        relay.put(consortium.topic, notice_name(identity.card.fingerprint), canonical_json(notice.model_dump()))
    except RelayError:
        raise FingerprintMismatchError(
            f"{identity.card.name} already published a different fingerprint for this epoch",
            member=identity.card.name,
        ) from None


def _compare_notices(consortium: Consortium, relay: Relay, mine: str) -> list[str]:
    """Names of members whose fingerprint is not published yet; raise on any disagreement."""
    present = set(relay.list(consortium.topic))
    waiting, differ = [], []
    for card in consortium.members:
        if notice_name(card.fingerprint) not in present:
            waiting.append(card.name)
            continue
        data = relay.get(consortium.topic, notice_name(card.fingerprint))
        notice = _check_signed(consortium, FingerprintNotice, data, card.fingerprint, "fingerprint")
        if notice.key_fingerprint != mine:
            differ.append(card.name)
    if differ:
        raise FingerprintMismatchError(
            f"key fingerprints disagree: {', '.join(differ)} derived a different key; "
            "no key file written",
            member=differ[0],
        )
    return waiting


def finish(
    consortium: Consortium,
    identity: Identity,
    relay: Relay,
    out: Path,
    *,
    wait_seconds: float = 0,
) -> FinishResult:
    """Open this member's shares, derive K, publish its fingerprint; write `out` when all agree.

    Run again (or pass `wait_seconds`) until every member has published. Any bad,
    replayed or misaddressed share, or a disagreeing fingerprint, raises and writes nothing.
    """
    out = Path(out)
    consortium.verify()
    consortium.require_member(identity)
    _require_accepted(consortium, relay)
    key = derive_key(
        consortium.consortium_id, consortium.epoch, consortium.digest, _open_mailbox(consortium, identity, relay)
    )
    _publish_notice(consortium, identity, relay, key.fingerprint)
    deadline = time.monotonic() + wait_seconds
    waiting = _compare_notices(consortium, relay, key.fingerprint)
    while waiting and time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        waiting = _compare_notices(consortium, relay, key.fingerprint)
    if waiting:
        return FinishResult(key_fingerprint=key.fingerprint, complete=False, waiting_for=waiting, key_file=None)
    if out.exists():
        existing = load_key(out)
        if (existing.consortium_id, existing.epoch, existing.fingerprint) != (
            key.consortium_id, key.epoch, key.fingerprint,
        ):
            raise KeyMaterialError(f"{out.name} already holds another key; choose another --out")
    else:
        key.save(out)
    return FinishResult(key_fingerprint=key.fingerprint, complete=True, waiting_for=[], key_file=out)
