"""Organization identities: an Ed25519 signing key and an X25519 agreement key.

An identity directory holds `card.json` (public, handed to others) and
`identity.key` (both private keys, encrypted under a passphrase with scrypt
and ChaCha20-Poly1305, owner-only permissions).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any

import blake3
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from cleanroom.errors import InputError, KeyMaterialError, VerificationError
from cleanroom.fsutil import write_atomic

CARD_FORMAT = "cleanroom-identity/1"
PRIVATE_FORMAT = "cleanroom-identity-private/1"
CARD_FILE = "card.json"
PRIVATE_FILE = "identity.key"
PASSPHRASE_ENV = "CLEANROOM_PASSPHRASE"
FINGERPRINT_CONTEXT = "cleanroom 2026-11 identity card fingerprint v1"
SIGNATURE_PREFIX = b"cleanroom-signed/1\x00"
# scrypt cost for new identities (2**17 * 8 * 128 bytes = 128 MiB, ~0.4 s);
# loading accepts what the file records, within these bounds.
SCRYPT_LOG_N = 17
_SCRYPT_LOG_N_RANGE = range(10, 23)
_NAME_PATTERN = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")
_HEX32 = re.compile(r"^[0-9a-f]{64}$")


class CardMismatchError(VerificationError):
    """An identity card's fingerprint does not match its keys or the expected card."""


def card_fingerprint(signing_key: bytes, agreement_key: bytes) -> str:
    """128-bit fingerprint (hex) binding both public keys of a card."""
    return blake3.blake3(
        signing_key + agreement_key, derive_key_context=FINGERPRINT_CONTEXT
    ).digest(16).hex()


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no spaces) for signing and digests."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signing_payload(purpose: str, body: Any) -> bytes:
    """Domain-separated bytes to sign: one signature can never serve another purpose."""
    return SIGNATURE_PREFIX + purpose.encode() + b"\x00" + canonical_json(body)


class IdentityCard(BaseModel):
    """The public side of an identity; its fingerprint is checked on every load."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = CARD_FORMAT
    name: str
    signing_key: str
    agreement_key: str
    fingerprint: str

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value != CARD_FORMAT:
            raise ValueError(f"must be {CARD_FORMAT}")
        return value

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME_PATTERN.match(value) or value != value.strip():
            raise ValueError("must be 1-64 printable characters without surrounding spaces")
        return value

    @field_validator("signing_key", "agreement_key")
    @classmethod
    def _valid_key(cls, value: str) -> str:
        if not _HEX32.match(value):
            raise ValueError("must be 32 bytes as lowercase hex")
        return value

    @model_validator(mode="after")
    def _check_fingerprint(self) -> IdentityCard:
        expected = card_fingerprint(bytes.fromhex(self.signing_key), bytes.fromhex(self.agreement_key))
        if self.fingerprint != expected:
            raise ValueError("fingerprint does not match the card's keys")
        return self

    @classmethod
    def parse(cls, data: Any, label: str = "identity card") -> IdentityCard:
        """Validate a card from a dict or JSON text; a bad card is a VerificationError."""
        try:
            if isinstance(data, (str, bytes)):
                return cls.model_validate_json(data)
            return cls.model_validate(data)
        except ValidationError as exc:
            if any("fingerprint does not match" in str(e.get("msg", "")) for e in exc.errors()):
                raise CardMismatchError(
                    f"{label}: fingerprint does not match its keys (the card was changed)"
                ) from None
            fields = ", ".join(".".join(map(str, e["loc"])) or "card" for e in exc.errors())
            raise VerificationError(f"{label} is not a valid identity card ({fields})") from None

    @property
    def short(self) -> str:
        """First 8 hex digits of the fingerprint, for display."""
        return self.fingerprint[:8]

    def verify(self, data: bytes, signature: bytes) -> None:
        """Check an Ed25519 signature by this card's key; raise VerificationError if bad."""
        try:
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.signing_key)).verify(signature, data)
        except (InvalidSignature, ValueError):
            raise VerificationError(f"signature by {self.name} does not verify") from None

    def agreement_public_key(self) -> X25519PublicKey:
        return X25519PublicKey.from_public_bytes(bytes.fromhex(self.agreement_key))


class Identity:
    """The private side of an identity. Its repr shows only the public card."""

    __slots__ = ("card", "_signing", "_agreement")

    def __init__(self, card: IdentityCard, signing: Ed25519PrivateKey, agreement: X25519PrivateKey):
        self.card = card
        self._signing = signing
        self._agreement = agreement

    def __repr__(self) -> str:
        return f"Identity(name={self.card.name!r}, fingerprint={self.card.fingerprint!r})"

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature over `data`."""
        return self._signing.sign(data)

    def exchange(self, peer_public_key: bytes) -> bytes:
        """X25519 shared secret with a peer's raw public key (for sealing/opening shares)."""
        try:
            return self._agreement.exchange(X25519PublicKey.from_public_bytes(peer_public_key))
        except ValueError:
            raise VerificationError("invalid X25519 public key") from None


def _new_card(name: str, signing: Ed25519PrivateKey, agreement: X25519PrivateKey) -> IdentityCard:
    spub = signing.public_key().public_bytes_raw()
    apub = agreement.public_key().public_bytes_raw()
    return IdentityCard.parse(
        {
            "name": name,
            "signing_key": spub.hex(),
            "agreement_key": apub.hex(),
            "fingerprint": card_fingerprint(spub, apub),
        },
        label=f"identity {name}",
    )


def _kek(passphrase: bytes, salt: bytes, log_n: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**log_n, r=8, p=1).derive(passphrase)


def create_identity(name: str, out_dir: Path, passphrase: bytes) -> IdentityCard:
    """Make a new identity in `out_dir`; refuse to overwrite an existing one."""
    out_dir = Path(out_dir)
    if (out_dir / CARD_FILE).exists() or (out_dir / PRIVATE_FILE).exists():
        raise KeyMaterialError(f"{out_dir.name} already holds an identity; choose another folder")
    if not _NAME_PATTERN.match(name) or name != name.strip():
        raise InputError("identity name must be 1-64 printable characters without surrounding spaces")
    if not passphrase:
        raise KeyMaterialError("the passphrase must not be empty")
    signing = Ed25519PrivateKey.generate()
    agreement = X25519PrivateKey.generate()
    card = _new_card(name, signing, agreement)
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    header = {
        "format": PRIVATE_FORMAT,
        "fingerprint": card.fingerprint,
        "kdf": {"name": "scrypt", "log_n": SCRYPT_LOG_N, "r": 8, "p": 1, "salt": salt.hex()},
        "aead": "chacha20poly1305",
        "nonce": nonce.hex(),
    }
    plaintext = signing.private_bytes_raw() + agreement.private_bytes_raw()
    ciphertext = ChaCha20Poly1305(_kek(passphrase, salt, SCRYPT_LOG_N)).encrypt(
        nonce, plaintext, canonical_json(header)
    )
    if not out_dir.exists():
        out_dir.mkdir(parents=True, mode=0o700)
    body = dict(header, ciphertext=ciphertext.hex())
    write_atomic(out_dir / PRIVATE_FILE, json.dumps(body, indent=2).encode() + b"\n", private=True)
    write_atomic(out_dir / CARD_FILE, card.model_dump_json(indent=2).encode() + b"\n")
    return card


def load_card(path: Path) -> IdentityCard:
    """Read a card file, or the card of an identity folder; its fingerprint is checked."""
    path = Path(path)
    file = path / CARD_FILE if path.is_dir() else path
    try:
        text = file.read_bytes()
    except FileNotFoundError:
        raise KeyMaterialError(f"no identity card at {path.name}") from None
    except OSError:
        raise KeyMaterialError(f"identity card {path.name} cannot be read") from None
    return IdentityCard.parse(text, label=f"identity card {path.name}")


def resolve_passphrase(confirm: bool = False) -> bytes:
    """The passphrase from CLEANROOM_PASSPHRASE, else a prompt when stdin is a terminal."""
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        if not env:
            raise KeyMaterialError(f"{PASSPHRASE_ENV} is set but empty")
        return env.encode()
    if not (sys.stdin and sys.stdin.isatty()):
        raise KeyMaterialError(
            f"no passphrase: set {PASSPHRASE_ENV} or run the command in a terminal to be prompted"
        )
    value = getpass.getpass("Identity passphrase: ")
    if not value:
        raise KeyMaterialError("the passphrase must not be empty")
    if confirm and getpass.getpass("Repeat passphrase: ") != value:
        raise KeyMaterialError("the two passphrases differ")
    return value.encode()


def load_identity(directory: Path, passphrase: bytes | None = None) -> Identity:
    """Open an identity folder; the passphrase defaults to `resolve_passphrase()`."""
    directory = Path(directory)
    label = directory.name or str(directory)
    card = load_card(directory)
    try:
        raw = json.loads((directory / PRIVATE_FILE).read_text())
    except FileNotFoundError:
        raise KeyMaterialError(f"identity {label} has no private key file") from None
    except (OSError, ValueError):
        raise KeyMaterialError(f"identity {label}: private key file is unreadable") from None
    if os.stat(directory / PRIVATE_FILE).st_mode & 0o077:
        raise KeyMaterialError(
            f"identity {label}: private key file is readable by others; run: chmod 600 {PRIVATE_FILE}"
        )
    try:
        if raw["format"] != PRIVATE_FORMAT or raw["aead"] != "chacha20poly1305":
            raise ValueError
        kdf = raw["kdf"]
        if kdf["name"] != "scrypt" or kdf["log_n"] not in _SCRYPT_LOG_N_RANGE:
            raise ValueError
        if (kdf["r"], kdf["p"]) != (8, 1) or raw["fingerprint"] != card.fingerprint:
            raise ValueError
        salt, nonce = bytes.fromhex(kdf["salt"]), bytes.fromhex(raw["nonce"])
        ciphertext = bytes.fromhex(raw["ciphertext"])
        header = {k: raw[k] for k in ("format", "fingerprint", "kdf", "aead", "nonce")}
    except (KeyError, TypeError, ValueError):
        raise KeyMaterialError(
            f"identity {label}: private key file is malformed or belongs to another card"
        ) from None
    if passphrase is None:
        passphrase = resolve_passphrase()
    try:
        plaintext = ChaCha20Poly1305(_kek(passphrase, salt, kdf["log_n"])).decrypt(
            nonce, ciphertext, canonical_json(header)
        )
    except (InvalidTag, ValueError):
        raise KeyMaterialError(f"wrong passphrase for identity {label}") from None
    signing = Ed25519PrivateKey.from_private_bytes(plaintext[:32])
    agreement = X25519PrivateKey.from_private_bytes(plaintext[32:])
    if _new_card(card.name, signing, agreement) != card:
        raise CardMismatchError(f"identity {label}: private keys do not match card.json")
    return Identity(card, signing, agreement)
