"""Synthetic voter files and partner lists with ground truth, for tests, demos and benchmarks."""

from cleanroom.synth.io import read_frame, read_truth, write_frame, write_partners
from cleanroom.synth.partners import (
    MODIFICATIONS,
    PARTNER_COLUMNS,
    PROFILES,
    NoiseProfile,
    generate_partners,
    noise_profile,
)
from cleanroom.synth.voters import AS_OF, VOTER_COLUMNS, generate_voters

__all__ = [
    "AS_OF",
    "MODIFICATIONS",
    "PARTNER_COLUMNS",
    "PROFILES",
    "VOTER_COLUMNS",
    "NoiseProfile",
    "generate_partners",
    "generate_voters",
    "noise_profile",
    "read_frame",
    "read_truth",
    "write_frame",
    "write_partners",
]
