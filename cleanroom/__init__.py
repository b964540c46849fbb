"""cleanroom: privacy-preserving list matching through hashed clean-room joins."""

from cleanroom.audit import AuditLog, Checkpoint, load_checkpoint, save_checkpoint, verify_log
from cleanroom.broker.campaign import Campaign, create_campaign, record_sends, register_optouts, run_campaign
from cleanroom.broker.engine import MatchOutcome, run_match
from cleanroom.broker.job import BrokerState, match_job, segment_job
from cleanroom.broker.load import load_inputs
from cleanroom.broker.releases import verify_release
from cleanroom.broker.reports import Report, load_report
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
from cleanroom.keys.ceremony import contribute, finish, status
from cleanroom.keys.consortium import (
    Consortium,
    Policy,
    accept_consortium,
    init_consortium,
    load_consortium,
    require_same_epoch,
    rotate_consortium,
)
from cleanroom.keys.relay import DirectoryRelay
from cleanroom.keys.secret import ConsortiumKey, load_key, new_key
from cleanroom.privacy import BudgetLedger, PrivacyPolicy, protect_table
from cleanroom.resolve import resolve_release
from cleanroom.spec import MatchKey, MatchSpec, load_spec

__all__ = [
    "AuditLog",
    "BrokerState",
    "BudgetLedger",
    "Campaign",
    "Checkpoint",
    "CleanroomError",
    "Consortium",
    "ConsortiumKey",
    "DirectoryRelay",
    "HashSummary",
    "Identity",
    "IdentityCard",
    "InputError",
    "KeyMaterialError",
    "Manifest",
    "MatchKey",
    "MatchOutcome",
    "MatchSpec",
    "Policy",
    "PolicyError",
    "PrivacyPolicy",
    "Report",
    "SpecError",
    "VerificationError",
    "accept_consortium",
    "contribute",
    "create_campaign",
    "create_identity",
    "finish",
    "hash_file",
    "hash_frame",
    "init_consortium",
    "load_card",
    "load_checkpoint",
    "load_consortium",
    "load_identity",
    "load_inputs",
    "load_key",
    "load_report",
    "load_spec",
    "match_job",
    "new_key",
    "protect_table",
    "record_sends",
    "register_optouts",
    "require_same_epoch",
    "resolve_release",
    "rotate_consortium",
    "run_campaign",
    "run_match",
    "save_checkpoint",
    "segment_job",
    "status",
    "verify_bundle",
    "verify_log",
    "verify_release",
]
