"""Token bundles: `tokens.parquet` + `manifest.json` + `manifest.sig`.

The manifest describes and pins the parquet file (BLAKE3 digest), and the
producer's Ed25519 signature covers the manifest's exact bytes. A bundle never
holds plaintext, the key, or the vault.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import blake3
import polars as pl
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cleanroom.attributes import AttributeProtection
from cleanroom.errors import VerificationError
from cleanroom.keys.identity import SIGNATURE_PREFIX, Identity, IdentityCard
from cleanroom.tokens import HANDLE_BYTES, TOKEN_BYTES, TOKEN_SCHEME

BUNDLE_FORMAT = "cleanroom-bundle/1"
TOKENS_FILE = "tokens.parquet"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
_SIGNING_DOMAIN = SIGNATURE_PREFIX + b"bundle-manifest\x00"


class KeyInfo(BaseModel):
    """One match key in a bundle and how many rows carry a token for it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    fields: list[str]
    variants: list[str] = Field(default_factory=list)
    checked_by: list[str] | None = None
    checks_only: bool | None = None
    max_expected_holders: float | None = None
    non_null: int = Field(ge=0)


class Manifest(BaseModel):
    """Everything a verifier needs to trust and join a bundle."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["cleanroom-bundle/1"] = BUNDLE_FORMAT
    bundle_id: str = Field(default_factory=lambda: secrets.token_hex(16))
    kind: Literal["partner", "reference", "optout"] = "partner"  # optout: an unsubscribe list (campaigns)
    consortium_id: str
    epoch: int
    key_fingerprint: str
    spec_name: str
    spec_digest: str
    token_scheme: Literal["blake3-keyed-128/2"] = TOKEN_SCHEME
    normalizer_versions: dict[str, str]
    row_count: int = Field(ge=0)
    keys: list[KeyInfo]
    attributes: list[str] = Field(default_factory=list)
    attribute_protection: AttributeProtection | None = None
    tokens_file: str = TOKENS_FILE
    tokens_digest: str
    producer: IdentityCard
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def file_digest(path: Path) -> str:
    """BLAKE3 of a file's bytes (hex), streamed (a mapping would count the whole file as memory)."""
    hasher = blake3.blake3()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def sign_manifest(directory: Path, manifest: Manifest, identity: Identity) -> None:
    """Write manifest.json and its detached signature into a (staging) bundle folder."""
    body = manifest.model_dump_json(indent=2).encode() + b"\n"
    (directory / MANIFEST_FILE).write_bytes(body)
    (directory / SIGNATURE_FILE).write_text(identity.sign(_SIGNING_DOMAIN + body).hex() + "\n")


def read_manifest(directory: Path) -> tuple[Manifest, bytes]:
    """Parse a bundle's manifest without trusting it yet."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise VerificationError(f"{directory.name}: no {MANIFEST_FILE}; not a bundle folder")
    body = path.read_bytes()
    try:
        return Manifest.model_validate_json(body), body
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.errors()[0]["loc"])
        raise VerificationError(f"{directory.name}: manifest field {where} is invalid") from None


def expected_schema(manifest: Manifest) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {"handle": pl.Binary()}
    schema |= {key.name: pl.List(pl.Binary()) for key in manifest.keys}
    schema |= {name: pl.String() for name in manifest.attributes}
    return schema


def verify_manifest_signature(manifest: Manifest, body: bytes, signature_hex: str) -> None:
    """The producer's signature over the manifest's exact bytes (checked before any token is read)."""
    try:
        signature = bytes.fromhex(signature_hex.strip())
    except ValueError:
        raise VerificationError(f"the signature of bundle {manifest.bundle_id} is malformed") from None
    manifest.producer.verify(_SIGNING_DOMAIN + body, signature)


def _require_parquet_magic(name: str, path: Path) -> None:
    """Parquet readers look only at the footer; a well-formed file also starts with the magic."""
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(max(0, path.stat().st_size - 4))
        tail = f.read(4)
    if head != b"PAR1" or tail != b"PAR1":
        raise VerificationError(f"{name}: {TOKENS_FILE} is not a parquet file (bad magic bytes)")


def verify_bundle(directory: Path, signer: IdentityCard | None = None) -> Manifest:
    """Check signature, file digest and schema; return the trusted manifest.

    With `signer`, the bundle must also have been signed by that identity.
    """
    directory = Path(directory)
    manifest, body = read_manifest(directory)
    name = directory.name
    if signer is not None and signer.fingerprint != manifest.producer.fingerprint:
        raise VerificationError(f"{name}: signed by {manifest.producer.name}, not {signer.name}")
    try:
        signature = (directory / SIGNATURE_FILE).read_text()
    except OSError:
        raise VerificationError(f"{name}: missing or unreadable {SIGNATURE_FILE}") from None
    verify_manifest_signature(manifest, body, signature)
    tokens = directory / manifest.tokens_file
    if manifest.tokens_file != TOKENS_FILE or not tokens.is_file():
        raise VerificationError(f"{name}: {TOKENS_FILE} is missing")
    if file_digest(tokens) != manifest.tokens_digest:
        raise VerificationError(f"{name}: {TOKENS_FILE} digest does not match the manifest")
    _verify_tokens(name, tokens, manifest)
    return manifest


def _verify_tokens(name: str, tokens: Path, manifest: Manifest) -> None:
    _require_parquet_magic(name, tokens)
    try:
        schema = dict(pl.read_parquet_schema(tokens))
    except Exception:  # noqa: BLE001 - any parquet failure means a broken bundle
        raise VerificationError(f"{name}: {TOKENS_FILE} is not a readable parquet file") from None
    if schema != expected_schema(manifest):
        raise VerificationError(f"{name}: {TOKENS_FILE} columns or types differ from the manifest")
    if pq.ParquetFile(tokens).metadata.num_rows != manifest.row_count:
        raise VerificationError(f"{name}: row count differs from the manifest")
    lf = pl.scan_parquet(tokens)
    # Column by column, so memory stays at one column of a row group. Handles are
    # random: sorting their first 64 bits (as integers) finds repeats much faster
    # than hashing binary values; only if some first halves repeat (or handles are
    # null) are whole handles compared.
    head = (
        pl.col("handle").bin.reinterpret(dtype=pl.UInt128, endianness="big") // pl.lit(1 << 64, dtype=pl.UInt128)
    ).cast(pl.UInt64).sort()
    bad_handle, maybe_dup = lf.select(
        (pl.col("handle").bin.size() != HANDLE_BYTES).any().alias("bad"),
        ((head == head.shift(1)).any() | (pl.col("handle").null_count() > 1)).alias("maybe_dup"),
    ).collect().row(0)
    if maybe_dup and not bad_handle:
        bad_handle = lf.select(pl.col("handle").n_unique() != pl.len()).collect().item()
    if bad_handle:
        raise VerificationError(f"{name}: row handles are malformed or repeated")
    for key in manifest.keys:
        non_null, malformed = lf.select(
            pl.col(key.name).is_not_null().sum().alias("non_null"),
            (pl.col(key.name).explode().bin.size() != TOKEN_BYTES).any().alias("malformed"),
        ).collect().row(0)
        if malformed:
            raise VerificationError(f"{name}: key {key.name} holds malformed tokens")
        if non_null != key.non_null:
            raise VerificationError(f"{name}: key {key.name} token count differs from the manifest")
