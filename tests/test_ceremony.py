"""Consortium documents and the contributory key ceremony through a directory relay."""

from __future__ import annotations

import json
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanroom.errors import InputError, KeyMaterialError, SpecError, VerificationError
from cleanroom.keys import ceremony
from cleanroom.keys import identity as ident
from cleanroom.keys.ceremony import (
    FingerprintMismatchError,
    MisaddressedShareError,
    MissingMemberError,
    ReplayError,
    TamperedMessageError,
    contribute,
    derive_key,
    finish,
    share_name,
    status,
)
from cleanroom.keys.consortium import (
    Consortium,
    Policy,
    accept_consortium,
    init_consortium,
    load_consortium,
    require_same_epoch,
    rotate_consortium,
)
from cleanroom.keys.identity import CardMismatchError, Identity, create_identity, load_identity
from cleanroom.keys.relay import DirectoryRelay
from cleanroom.keys.secret import load_key

VECTORS = Path(__file__).parent / "vectors" / "ceremony.json"
PASS = b"pw"


@pytest.fixture(autouse=True)
def cheap_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ident, "SCRYPT_LOG_N", 10)


@dataclass
class Setup:
    root: Path
    ids: list[Identity]
    doc: Consortium
    relay: DirectoryRelay

    def key_path(self, i: int) -> Path:
        return self.root / f"member{i}.key"

    def no_key_files(self) -> bool:
        return not any(self.key_path(i).exists() for i in range(len(self.ids)))


def make_members(root: Path, n: int) -> list[Identity]:
    for i in range(n):
        create_identity(f"Org {chr(65 + i)}", root / f"id{i}", PASS)
    return [load_identity(root / f"id{i}", PASS) for i in range(n)]


def make_setup(root: Path, n: int = 5, accept: bool = True) -> Setup:
    ids = make_members(root, n)
    init_consortium("metro-2026", ids[0], [m.card for m in ids[1:]], root / "consortium.json")
    doc = load_consortium(root / "consortium.json")
    relay = DirectoryRelay(root / "relay")
    if accept:
        for m in ids:
            accept_consortium(doc, m, relay)
    return Setup(root, ids, doc, relay)


def run_all(s: Setup, doc: Consortium | None = None) -> list[str]:
    doc = doc or s.doc
    for m in s.ids:
        if doc.name_of(m.card.fingerprint) != "a non-member":
            contribute(doc, m, s.relay)
    results = []
    for _ in range(2):
        results = [finish(doc, m, s.relay, s.key_path(i)) for i, m in enumerate(s.ids)]
    assert all(r.complete for r in results)
    return [r.key_fingerprint for r in results]


def relay_bytes(s: Setup) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(s.relay.root.rglob("*")) if p.is_file())


def test_five_member_ceremony(tmp_path: Path) -> None:
    s = make_setup(tmp_path)
    for m in s.ids:
        assert contribute(s.doc, m, s.relay)
    first = [finish(s.doc, m, s.relay, s.key_path(i)) for i, m in enumerate(s.ids)]
    assert [r.complete for r in first] == [False] * 4 + [True]
    assert first[0].waiting_for == [c.name for c in s.doc.members if c.fingerprint != s.ids[0].card.fingerprint]
    assert not s.key_path(0).exists()
    second = [finish(s.doc, m, s.relay, s.key_path(i)) for i, m in enumerate(s.ids)]
    assert all(r.complete for r in second)
    keys = [load_key(s.key_path(i)) for i in range(5)]
    assert len({k.secret for k in keys}) == 1
    assert {k.fingerprint for k in keys} == {r.key_fingerprint for r in first + second}
    assert {(k.consortium_id, k.epoch) for k in keys} == {("metro-2026", 0)}
    assert all(stat.S_IMODE(s.key_path(i).stat().st_mode) == 0o600 for i in range(5))
    st_ = status(s.doc, s.relay)
    assert st_.complete and st_.agreed_fingerprint == keys[0].fingerprint
    assert all(m.accepted and m.finished and m.shares == 5 and not m.problems for m in st_.members)


def test_consortium_document(tmp_path: Path) -> None:
    ids = make_members(tmp_path, 3)
    policy = Policy(k=15, epsilon_budget=2.0, match_spec_digest="ab" * 32, clear_attributes=("precinct", "district"))
    doc = init_consortium("c1", ids[1], [ids[0].card, ids[2].card], tmp_path / "c.json", policy=policy)
    loaded = load_consortium(tmp_path / "c.json")
    assert loaded == doc and loaded.digest == doc.digest
    assert loaded.policy.clear_attributes == ("district", "precinct")
    assert [c.fingerprint for c in loaded.members] == sorted(m.card.fingerprint for m in ids)
    with pytest.raises(InputError, match="already exists"):
        init_consortium("c1", ids[1], [ids[0].card], tmp_path / "c.json")
    with pytest.raises(SpecError, match="consortium_id"):
        init_consortium("bad id!", ids[1], [ids[0].card], tmp_path / "x.json")
    with pytest.raises(SpecError, match="two members"):
        init_consortium("solo", ids[1], [], tmp_path / "y.json")
    # the convenor's signature covers the policy
    raw = json.loads((tmp_path / "c.json").read_text())
    raw["body"]["policy"]["k"] = 2
    (tmp_path / "c.json").write_text(json.dumps(raw))
    with pytest.raises(VerificationError, match="convenor's signature"):
        load_consortium(tmp_path / "c.json")


def test_contribute_requires_every_acceptance(tmp_path: Path) -> None:
    s = make_setup(tmp_path, n=3, accept=False)
    accept_consortium(s.doc, s.ids[0], s.relay)
    with pytest.raises(MissingMemberError, match="not yet accepted") as exc:
        contribute(s.doc, s.ids[0], s.relay)
    assert exc.value.member in {"Org B", "Org C"}


def test_missing_member_no_key_file(tmp_path: Path) -> None:
    s = make_setup(tmp_path, n=4)
    for m in s.ids[:3]:
        contribute(s.doc, m, s.relay)
    for i, m in enumerate(s.ids):
        with pytest.raises(MissingMemberError, match="no share yet from: Org D") as exc:
            finish(s.doc, m, s.relay, s.key_path(i))
        assert exc.value.member == "Org D"
    assert s.no_key_files()


def test_contribute_twice_refused(tmp_path: Path) -> None:
    s = make_setup(tmp_path, n=2)
    contribute(s.doc, s.ids[0], s.relay)
    with pytest.raises(KeyMaterialError, match="already contributed"):
        contribute(s.doc, s.ids[0], s.relay)


def _share_path(s: Setup, sender: Identity, recipient: Identity, doc: Consortium | None = None) -> Path:
    doc = doc or s.doc
    return s.relay.root / doc.consortium_id / f"epoch-{doc.epoch}" / share_name(
        sender.card.fingerprint, recipient.card.fingerprint
    )


def _finish_all_expect(s: Setup, error: type[Exception], member: str, skip: Identity | None = None) -> None:
    """Every member whose mailbox holds the bad share fails naming `member`; nobody writes a key."""
    for i, m in enumerate(s.ids):
        if m is skip:
            continue
        with pytest.raises(error) as exc:
            finish(s.doc, m, s.relay, s.key_path(i))
        assert exc.value.member == member
    assert s.no_key_files()


def test_share_moved_to_another_mailbox(tmp_path: Path) -> None:
    s = make_setup(tmp_path, n=3)
    a, b, c = s.ids
    for m in s.ids:
        contribute(s.doc, m, s.relay)
    # the relay files A's share for B in C's mailbox
    _share_path(s, a, c).write_bytes(_share_path(s, a, b).read_bytes())
    with pytest.raises(MisaddressedShareError, match="sealed to Org B") as exc:
        finish(s.doc, c, s.relay, s.key_path(2))
    assert exc.value.member == "Org A"
    assert not s.key_path(2).exists()


def test_share_sealed_to_another_key(tmp_path: Path) -> None:
    s = make_setup(tmp_path, n=3)
    a, b, c = s.ids
    for m in s.ids[1:]:
        contribute(s.doc, m, s.relay)
    # A signs a share whose header names C but whose ciphertext is sealed to B's key
    contribution = b"\x01" * 32
    commitment = ceremony._commitment(s.doc, a.card.fingerprint, contribution)
    for r in s.ids:
        share = ceremony._seal(s.doc, a, r.card, contribution, commitment)
        if r is c:
            share = ceremony._seal(s.doc, a, b.card, contribution, commitment)
            share = share.model_copy(update={"recipient": c.card.fingerprint})
            share = share.model_copy(update={"signature": a.sign(share.payload()).hex()})
        s.relay.put(s.doc.topic, share_name(a.card.fingerprint, r.card.fingerprint), json.dumps(share.model_dump()).encode())
    with pytest.raises(TamperedMessageError, match="does not open") as exc:
        finish(s.doc, c, s.relay, s.key_path(2))
    assert exc.value.member == "Org A" and s.no_key_files()


def test_bad_signature_and_associated_data(tmp_path: Path) -> None:
    s = make_setup(tmp_path, n=3)
    a, b, c = s.ids
    for m in s.ids:
        contribute(s.doc, m, s.relay)
    path = _share_path(s, b, c)
    share = json.loads(path.read_text())
    # flipped ciphertext: the signature no longer verifies
    share["ciphertext"] = ("0" if share["ciphertext"][0] != "0" else "1") + share["ciphertext"][1:]
    path.write_text(json.dumps(share))
    with pytest.raises(TamperedMessageError, match="bad signature") as exc:
        finish(s.doc, c, s.relay, s.key_path(2))
    assert exc.value.member == "Org B"
    # a sender re-signing a changed header: the signature holds, the associated data does not
    share = ceremony.SealedShare.model_validate_json(_share_path(s, b, a).read_bytes())
    forged = share.model_copy(update={"commitment": "00" * 32})
    forged = forged.model_copy(update={"signature": b.sign(forged.payload()).hex()})
    _share_path(s, b, a).write_text(json.dumps(forged.model_dump()))
    with pytest.raises(TamperedMessageError, match="does not open") as exc:
        finish(s.doc, a, s.relay, s.key_path(0))
    assert exc.value.member == "Org B" and s.no_key_files()


def test_equivocating_sender_is_named(tmp_path: Path) -> None:
    s = make_setup(tmp_path, n=3)
    a, b, c = s.ids
    for m in s.ids[1:]:
        contribute(s.doc, m, s.relay)
    for i, r in enumerate(s.ids):
        contribution = bytes([i + 1]) * 32  # a different contribution for each recipient
        commitment = ceremony._commitment(s.doc, a.card.fingerprint, contribution)
        share = ceremony._seal(s.doc, a, r.card, contribution, commitment)
        s.relay.put(s.doc.topic, share_name(a.card.fingerprint, r.card.fingerprint), json.dumps(share.model_dump()).encode())
    _finish_all_expect(s, TamperedMessageError, "Org A")
    assert any("different contributions" in p for m in status(s.doc, s.relay).members for p in m.problems)


def test_replayed_share_from_earlier_epoch(tmp_path: Path) -> None:
    s = make_setup(tmp_path, n=3)
    a, b, c = s.ids
    run_all(s)
    old = {(x, y): _share_path(s, x, y).read_bytes() for x in s.ids for y in s.ids}
    new_doc = rotate_consortium(s.doc, a, tmp_path / "epoch1.json")
    assert new_doc.epoch == 1 and new_doc.body.previous_digest == s.doc.digest
    for m in s.ids:
        accept_consortium(new_doc, m, s.relay)
    for m in (a, c):
        contribute(new_doc, m, s.relay)
    # the relay replays B's epoch-0 shares as if B had contributed to epoch 1
    for y in s.ids:
        _share_path(s, b, y, new_doc).write_bytes(old[(b, y)])
    s.doc = new_doc
    for i in range(3):
        s.key_path(i).unlink()
    _finish_all_expect(s, ReplayError, "Org B")


def test_rotation_and_removal(tmp_path: Path) -> None:
    s = make_setup(tmp_path, n=3)
    a, b, c = s.ids
    fp0 = run_all(s)[0]
    doc1 = rotate_consortium(s.doc, a, tmp_path / "epoch1.json", remove=["Org C"])
    assert [m.name for m in doc1.members if m.name == "Org C"] == []
    for m in (a, b):
        accept_consortium(doc1, m, s.relay)
    for m in (a, b):
        contribute(doc1, m, s.relay)
    with pytest.raises(VerificationError, match="not a member"):
        accept_consortium(doc1, c, s.relay)
    outs = [tmp_path / "a1.key", tmp_path / "b1.key"]
    for _ in range(2):
        results = [finish(doc1, m, s.relay, o) for m, o in zip((a, b), outs)]
    assert all(r.complete for r in results)
    k1 = load_key(outs[0])
    assert k1.epoch == 1 and k1.fingerprint != fp0 and load_key(outs[1]).secret == k1.secret
    with pytest.raises(InputError, match="not a member"):
        rotate_consortium(doc1, a, tmp_path / "x.json", remove=["Org Z"])


def test_changed_card_fingerprint(tmp_path: Path) -> None:
    s = make_setup(tmp_path, n=3, accept=False)
    # 1. a card inside the document whose keys were swapped without its fingerprint
    raw = json.loads((tmp_path / "consortium.json").read_text())
    raw["body"]["members"][1]["agreement_key"] = raw["body"]["members"][0]["agreement_key"]
    (tmp_path / "tampered.json").write_text(json.dumps(raw))
    with pytest.raises(CardMismatchError, match="changed"):
        load_consortium(tmp_path / "tampered.json")
    # 2. a whole card replaced consistently: the convenor's signature catches it
    intruder = make_members(tmp_path / "intruder", 1)[0]
    raw = json.loads((tmp_path / "consortium.json").read_text())
    raw["body"]["members"][1] = json.loads(intruder.card.model_dump_json())
    (tmp_path / "swapped.json").write_text(json.dumps(raw))
    with pytest.raises(VerificationError):
        load_consortium(tmp_path / "swapped.json")
    # 3. a member whose identity changed since the document was signed
    create_identity(s.ids[2].card.name, tmp_path / "new-c", PASS)
    new_c = load_identity(tmp_path / "new-c", PASS)
    with pytest.raises(CardMismatchError, match="lists another card"):
        accept_consortium(s.doc, new_c, s.relay)
    with pytest.raises(CardMismatchError):
        contribute(s.doc, new_c, s.relay)
    with pytest.raises(CardMismatchError):
        finish(s.doc, new_c, s.relay, s.key_path(2))
    assert s.no_key_files()


def test_fingerprint_disagreement_names_member(tmp_path: Path) -> None:
    s = make_setup(tmp_path, n=3)
    a, b, c = s.ids
    for m in s.ids:
        contribute(s.doc, m, s.relay)
    ceremony._publish_notice(s.doc, c, s.relay, "00" * 16)  # C claims another key
    for i, m in enumerate((a, b)):
        with pytest.raises(FingerprintMismatchError, match="Org C derived a different key") as exc:
            finish(s.doc, m, s.relay, s.key_path(i))
        assert exc.value.member == "Org C"
    with pytest.raises(FingerprintMismatchError, match="already published"):
        finish(s.doc, c, s.relay, s.key_path(2))
    assert s.no_key_files()
    assert not status(s.doc, s.relay).complete


def test_existing_key_file_not_overwritten(tmp_path: Path) -> None:
    s = make_setup(tmp_path, n=2)
    run_all(s)
    before = s.key_path(0).read_bytes()
    assert finish(s.doc, s.ids[0], s.relay, s.key_path(0)).complete  # same key: no-op
    assert s.key_path(0).read_bytes() == before
    ceremony.derive_key("other", 0, "00" * 32, {"00" * 16: b"\x00" * 32}).save(tmp_path / "other.key")
    with pytest.raises(KeyMaterialError, match="already holds another key"):
        finish(s.doc, s.ids[0], s.relay, tmp_path / "other.key")


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    contributions=st.lists(st.binary(min_size=32, max_size=32), min_size=2, max_size=4, unique=True)
)
def test_relay_never_holds_secrets(contributions: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the contributions, the relay's bytes contain no contribution, K or private key."""
    monkeypatch.setattr(ident, "SCRYPT_LOG_N", 10)
    drawn = iter(contributions)
    real = ceremony.secrets.token_bytes

    def token_bytes(n: int) -> bytes:
        return next(drawn) if n == ceremony.CONTRIBUTION_BYTES else real(n)

    with tempfile.TemporaryDirectory() as tmp:
        s = make_setup(Path(tmp), n=len(contributions))
        with monkeypatch.context() as m:
            m.setattr(ceremony.secrets, "token_bytes", token_bytes)
            run_all(s)
        k = load_key(s.key_path(0))
        secrets_ = [k.secret, *contributions]
        for member in s.ids:
            secrets_ += [member._signing.private_bytes_raw(), member._agreement.private_bytes_raw()]
        blob = relay_bytes(s)
        for secret in secrets_:
            for form in (secret, secret.hex().encode(), secret.hex().upper().encode()):
                assert form not in blob
        assert k.fingerprint.encode() in blob  # the public fingerprint is published


def test_known_answer_vectors() -> None:
    vectors = json.loads(VECTORS.read_text())
    for case in vectors["cases"]:
        contributions = {fp: bytes.fromhex(c) for fp, c in case["contributions"].items()}
        key = derive_key(case["consortium_id"], case["epoch"], case["consortium_digest"], contributions)
        assert key.secret.hex() == case["secret"], case["description"]
        assert key.fingerprint == case["key_fingerprint"], case["description"]
        # insertion order never matters: the derivation sorts by fingerprint
        reordered = dict(reversed(list(contributions.items())))
        assert derive_key(case["consortium_id"], case["epoch"], case["consortium_digest"], reordered) == key


def test_derivation_separates_inputs() -> None:
    base = {"aa" * 16: b"\x01" * 32, "bb" * 16: b"\x02" * 32}
    k = derive_key("c", 0, "00" * 32, base)
    assert derive_key("c", 1, "00" * 32, base) != k
    assert derive_key("d", 0, "00" * 32, base) != k
    assert derive_key("c", 0, "11" * 32, base) != k
    assert derive_key("c", 0, "00" * 32, {"aa" * 16: b"\x02" * 32, "bb" * 16: b"\x01" * 32}) != k
    with pytest.raises(KeyMaterialError):
        derive_key("c", 0, "00" * 32, {"aa" * 16: b"\x01"})


def test_require_same_epoch() -> None:
    require_same_epoch([])
    require_same_epoch([("a", "c", 1, "f1"), ("b", "c", 1, "f1")])
    with pytest.raises(VerificationError, match="^bundle b is from epoch 2"):
        require_same_epoch([("bundle a", "c", 1, "f1"), ("bundle b", "c", 2, "f1")])
    with pytest.raises(VerificationError, match="^reference is from consortium d"):
        require_same_epoch([("bundle a", "c", 1, "f1"), ("reference", "d", 1, "f1")])
    with pytest.raises(VerificationError, match="^bundle c was hashed with key f2"):
        require_same_epoch([("bundle a", "c", 1, "f1"), ("bundle b", "c", 1, "f1"), ("bundle c", "c", 1, "f2")])
