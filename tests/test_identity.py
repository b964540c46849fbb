"""Identities: creation, encrypted private keys, cards, passphrase handling."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from cleanroom.errors import InputError, KeyMaterialError, VerificationError
from cleanroom.keys import identity as ident
from cleanroom.keys.identity import (
    CardMismatchError,
    IdentityCard,
    create_identity,
    load_card,
    load_identity,
    resolve_passphrase,
)

PASS = b"correct horse battery staple"


@pytest.fixture(autouse=True)
def cheap_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Low scrypt cost for speed; the cost is recorded in each file, so loading is unaffected."""
    monkeypatch.setattr(ident, "SCRYPT_LOG_N", 10)
    monkeypatch.delenv(ident.PASSPHRASE_ENV, raising=False)


def test_create_and_load_roundtrip(tmp_path: Path) -> None:
    card = create_identity("Union Local 12", tmp_path / "id", PASS)
    assert card.format == "cleanroom-identity/1"
    assert len(bytes.fromhex(card.signing_key)) == 32
    assert len(bytes.fromhex(card.agreement_key)) == 32
    assert len(bytes.fromhex(card.fingerprint)) == 16
    assert stat.S_IMODE((tmp_path / "id" / ident.PRIVATE_FILE).stat().st_mode) == 0o600
    assert load_card(tmp_path / "id") == card
    assert load_card(tmp_path / "id" / "card.json") == card

    me = load_identity(tmp_path / "id", PASS)
    assert me.card == card
    signature = me.sign(b"manifest bytes")
    card.verify(b"manifest bytes", signature)
    with pytest.raises(VerificationError):
        card.verify(b"other bytes", signature)
    with pytest.raises(VerificationError):
        card.verify(b"manifest bytes", b"\x00" * 64)


def test_private_keys_never_in_repr_or_card(tmp_path: Path) -> None:
    create_identity("Org", tmp_path / "id", PASS)
    me = load_identity(tmp_path / "id", PASS)
    private = [me._signing.private_bytes_raw(), me._agreement.private_bytes_raw()]
    text = repr(me) + str(me)
    disk = b"".join(p.read_bytes() for p in (tmp_path / "id").iterdir())
    for key in private:
        assert key.hex() not in text
        assert key not in disk and key.hex().encode() not in disk


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    create_identity("Org", tmp_path / "id", PASS)
    before = (tmp_path / "id" / ident.PRIVATE_FILE).read_bytes()
    with pytest.raises(KeyMaterialError, match="already holds an identity"):
        create_identity("Org", tmp_path / "id", PASS)
    assert (tmp_path / "id" / ident.PRIVATE_FILE).read_bytes() == before


def test_bad_name_and_empty_passphrase(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        create_identity("bad\nname", tmp_path / "a", PASS)
    with pytest.raises(KeyMaterialError):
        create_identity("Org", tmp_path / "b", b"")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_wrong_passphrase_is_clear(tmp_path: Path) -> None:
    create_identity("Org", tmp_path / "acme", PASS)
    with pytest.raises(KeyMaterialError, match="^wrong passphrase for identity acme$"):
        load_identity(tmp_path / "acme", b"not it")


def test_passphrase_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    create_identity("Org", tmp_path / "id", PASS)
    monkeypatch.setenv(ident.PASSPHRASE_ENV, PASS.decode())
    assert load_identity(tmp_path / "id").card.name == "Org"
    assert resolve_passphrase() == PASS


def test_missing_passphrase_without_tty_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    create_identity("Org", tmp_path / "id", PASS)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(KeyMaterialError, match="CLEANROOM_PASSPHRASE"):
        load_identity(tmp_path / "id")
    monkeypatch.setenv(ident.PASSPHRASE_ENV, "")
    with pytest.raises(KeyMaterialError, match="empty"):
        resolve_passphrase()


def test_changed_card_is_detected(tmp_path: Path) -> None:
    create_identity("Org", tmp_path / "id", PASS)
    other = create_identity("Other", tmp_path / "other", PASS)
    card_path = tmp_path / "id" / "card.json"
    body = json.loads(card_path.read_text())
    body["signing_key"] = other.signing_key
    card_path.write_text(json.dumps(body))
    with pytest.raises(CardMismatchError, match="changed"):
        load_card(tmp_path / "id")
    # a consistent card swapped in (keys and fingerprint) no longer matches the private key file
    card_path.write_text(other.model_dump_json())
    with pytest.raises(KeyMaterialError, match="another card"):
        load_identity(tmp_path / "id", PASS)


def test_loose_permissions_refused(tmp_path: Path) -> None:
    create_identity("Org", tmp_path / "id", PASS)
    (tmp_path / "id" / ident.PRIVATE_FILE).chmod(0o644)
    with pytest.raises(KeyMaterialError, match="chmod 600"):
        load_identity(tmp_path / "id", PASS)


def test_card_parse_rejects_garbage() -> None:
    with pytest.raises(VerificationError):
        IdentityCard.parse("{not json")
    with pytest.raises(VerificationError, match="signing_key"):
        IdentityCard.parse(
            {"name": "x", "signing_key": "zz", "agreement_key": "00" * 32, "fingerprint": "00"}
        )
