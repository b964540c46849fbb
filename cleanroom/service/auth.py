"""Signed requests: every call carries an Ed25519 signature by a member's identity key.

The signature covers the method, the path with its query, a BLAKE3 digest of
the body, a timestamp and a random nonce, under a domain-separated payload
(`signing_payload("cleanroom-request/1", ...)`), so a signature can never be
replayed as a bundle, share or release signature. The server rejects
timestamps outside +-300 s and any nonce it has seen before (nonces are kept
in SQLite, so a replay after a restart fails too).
"""

from __future__ import annotations

import re
import secrets
import time

import blake3

from cleanroom.keys.identity import Identity, IdentityCard, signing_payload

REQUEST_PURPOSE = "cleanroom-request/1"
CLOCK_SKEW_SECONDS = 300
KEY_HEADER = "cleanroom-key"
TIMESTAMP_HEADER = "cleanroom-timestamp"
NONCE_HEADER = "cleanroom-nonce"
DIGEST_HEADER = "cleanroom-content-digest"
SIGNATURE_HEADER = "cleanroom-signature"
EMPTY_DIGEST = blake3.blake3(b"").hexdigest()

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX128 = re.compile(r"^[0-9a-f]{128}$")


def body_digest(body: bytes) -> str:
    """BLAKE3 (hex) of a request body; uploads send the file's digest, computed streaming."""
    return blake3.blake3(body).hexdigest()


def request_payload(method: str, target: str, digest: str, timestamp: int, nonce: str, key: str) -> bytes:
    """The exact bytes a request signature covers."""
    return signing_payload(REQUEST_PURPOSE, {
        "method": method.upper(), "target": target, "digest": digest,
        "timestamp": timestamp, "nonce": nonce, "key": key,
    })


def sign_request(identity: Identity, method: str, target: str, digest: str = EMPTY_DIGEST,
                 *, timestamp: int | None = None, nonce: str | None = None) -> dict[str, str]:
    """Headers that authenticate one request (`target` is the path plus any `?query`)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_hex(16)
    key = identity.card.fingerprint
    signature = identity.sign(request_payload(method, target, digest, timestamp, nonce, key))
    return {
        KEY_HEADER: key, TIMESTAMP_HEADER: str(timestamp), NONCE_HEADER: nonce,
        DIGEST_HEADER: digest, SIGNATURE_HEADER: signature.hex(),
    }


class SignedHeaders:
    """The authentication headers of one request, syntax-checked (not yet verified)."""

    __slots__ = ("digest", "key", "nonce", "signature", "timestamp")

    def __init__(self, key: str, timestamp: int, nonce: str, digest: str, signature: bytes):
        self.key, self.timestamp, self.nonce, self.digest, self.signature = key, timestamp, nonce, digest, signature

    @classmethod
    def parse(cls, headers) -> SignedHeaders | None:
        """None when any header is missing or malformed."""
        try:
            key = headers[KEY_HEADER]
            timestamp = int(headers[TIMESTAMP_HEADER])
            nonce = headers[NONCE_HEADER]
            digest = headers[DIGEST_HEADER]
            signature = headers[SIGNATURE_HEADER]
        except (KeyError, ValueError):
            return None
        if not (_HEX32.match(key) and _HEX32.match(nonce) and _HEX64.match(digest) and _HEX128.match(signature)):
            return None
        return cls(key, timestamp, nonce, digest, bytes.fromhex(signature))

    def fresh(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return abs(now - self.timestamp) <= CLOCK_SKEW_SECONDS

    def verify(self, card: IdentityCard, method: str, target: str) -> bool:
        try:
            card.verify(request_payload(method, target, self.digest, self.timestamp, self.nonce, self.key),
                        self.signature)
        except Exception:  # noqa: BLE001 - any failure is simply "not authenticated"
            return False
        return True
