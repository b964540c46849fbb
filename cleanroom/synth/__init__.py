"""Synthetic voter files and partner lists with ground truth, for tests, demos and benchmarks."""

from cleanroom.synth.voters import AS_OF, generate_voters

__all__ = ["AS_OF", "generate_voters"]
