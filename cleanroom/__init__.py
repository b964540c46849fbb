"""cleanroom: privacy-preserving list matching through hashed clean-room joins."""

from cleanroom.bundle import Manifest, verify_bundle
from cleanroom.errors import (
    CleanroomError,
    InputError,
    KeyMaterialError,
    PolicyError,
    SpecError,
    VerificationError,
)
from cleanroom.hashing import HashSummary, hash_file, hash_frame
from cleanroom.keys.identity import Identity, IdentityCard, create_identity, load_card, load_identity
from cleanroom.keys.secret import ConsortiumKey, load_key, new_key
from cleanroom.spec import MatchKey, MatchSpec, load_spec

__all__ = [
    "CleanroomError",
    "ConsortiumKey",
    "HashSummary",
    "Identity",
    "IdentityCard",
    "InputError",
    "KeyMaterialError",
    "Manifest",
    "MatchKey",
    "MatchSpec",
    "PolicyError",
    "SpecError",
    "VerificationError",
    "create_identity",
    "hash_file",
    "hash_frame",
    "load_card",
    "load_identity",
    "load_key",
    "load_spec",
    "new_key",
    "verify_bundle",
]
