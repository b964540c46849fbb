"""The consortium secret K: key files, fingerprints and per-match-key subkeys.

The only module besides `tokens` that touches K; it never prints or logs it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path

import blake3
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cleanroom.errors import KeyMaterialError
from cleanroom.fsutil import write_atomic

KEY_FORMAT = "cleanroom-key/1"
FINGERPRINT_CONTEXT = "cleanroom 2026-11 consortium key fingerprint v1"
SUBKEY_CONTEXT = "cleanroom 2026-11 match-key subkey v1"
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def fingerprint(secret: bytes) -> str:
    """Public 128-bit fingerprint of K (hex); safe to print and compare."""
    return blake3.blake3(secret, derive_key_context=FINGERPRINT_CONTEXT).digest(16).hex()


class ConsortiumKey(BaseModel):
    """K with the consortium and epoch it belongs to. `repr` never shows K."""

    model_config = ConfigDict(frozen=True)

    consortium_id: str
    epoch: int = Field(ge=0)
    secret: bytes = Field(repr=False, min_length=32, max_length=32)

    @field_validator("consortium_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not _ID_PATTERN.match(value):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-'")
        return value

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.secret)

    def subkey(self, match_key: str, format_version: int) -> bytes:
        """32-byte subkey for one match key (BLAKE3 derive_key, domain-separated)."""
        material = json.dumps(
            ["cleanroom", format_version, self.consortium_id, self.epoch, match_key],
            separators=(",", ":"),
        ).encode()
        return blake3.blake3(
            material + self.secret, derive_key_context=SUBKEY_CONTEXT
        ).digest()

    def save(self, path: Path) -> None:
        """Write the key file with owner-only permissions."""
        body = {
            "format": KEY_FORMAT,
            "consortium_id": self.consortium_id,
            "epoch": self.epoch,
            "secret": self.secret.hex(),
            "fingerprint": self.fingerprint,
        }
        write_atomic(Path(path), json.dumps(body, indent=2).encode() + b"\n", private=True)


def new_key(consortium_id: str = "local", epoch: int = 0) -> ConsortiumKey:
    """A fresh random K for a single organization (the ceremony makes shared ones)."""
    return ConsortiumKey(consortium_id=consortium_id, epoch=epoch, secret=secrets.token_bytes(32))


def load_key(path: Path) -> ConsortiumKey:
    """Read a key file; refuse a wrong format, a bad fingerprint or loose permissions."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeyMaterialError(f"key file {path.name} not found") from None
    except (OSError, ValueError):
        raise KeyMaterialError(f"key file {path.name} is not a readable cleanroom key file") from None
    if not isinstance(raw, dict) or raw.get("format") != KEY_FORMAT:
        raise KeyMaterialError(f"key file {path.name} is not a {KEY_FORMAT} file")
    if os.stat(path).st_mode & 0o077:
        raise KeyMaterialError(
            f"key file {path.name} is readable by others; run: chmod 600 {path.name}"
        )
    try:
        key = ConsortiumKey(
            consortium_id=raw["consortium_id"],
            epoch=raw["epoch"],
            secret=bytes.fromhex(raw["secret"]),
        )
    except (KeyError, ValueError, TypeError, ValidationError):
        raise KeyMaterialError(f"key file {path.name} is malformed") from None
    if raw.get("fingerprint") != key.fingerprint:
        raise KeyMaterialError(f"key file {path.name} fingerprint does not match its secret")
    return key
