"""Verify-and-load: nothing is joined until every bundle checks out and all agree.

Tokens are turned from 16-byte binary into UInt128 on load: joins on a
128-bit integer are several times faster than on binary columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cleanroom.bundle import Manifest, verify_bundle
from cleanroom.errors import VerificationError
from cleanroom.keys.consortium import Consortium, require_same_epoch


@dataclass(frozen=True)
class LoadedBundle:
    """A verified bundle: its manifest and a lazy scan of its tokens."""

    name: str
    manifest: Manifest
    path: Path

    @property
    def key_names(self) -> list[str]:
        return [k.name for k in self.manifest.keys]

    def scan(self) -> pl.LazyFrame:
        return pl.scan_parquet(self.path / self.manifest.tokens_file)

    def key_tokens(self, key: str, index: str) -> pl.LazyFrame:
        """Long (index, token) pairs of one match key, tokens as UInt128, one row per distinct pair."""
        return self._pairs(pl.col(key).list.unique(), index)  # per row: much cheaper than over all pairs

    def token_pairs(self, key: str, index: str) -> pl.LazyFrame:
        """Like `key_tokens` without removing repeated pairs (a row listing a token twice): cheaper
        for callers that deduplicate later anyway."""
        return self._pairs(pl.col(key), index)

    def _pairs(self, tokens: pl.Expr, index: str) -> pl.LazyFrame:
        return (
            self.scan()
            .with_row_index(index)
            .select(index, tokens.alias("token"))
            .explode("token")
            .drop_nulls("token")
            .select(index, pl.col("token").bin.reinterpret(dtype=pl.UInt128, endianness="big"))
        )


@dataclass(frozen=True)
class JobInputs:
    """The verified bundles of one job: references first (the voter file leads)."""

    references: list[LoadedBundle]
    partners: list[LoadedBundle]
    consortium: Consortium | None

    @property
    def primary(self) -> LoadedBundle:
        return self.references[0]

    @property
    def digests(self) -> list[str]:
        return [b.manifest.tokens_digest for b in [*self.references, *self.partners]]


def load_inputs(
    references: list[Path], partners: list[Path], consortium: Consortium | None = None
) -> JobInputs:
    """Verify every bundle and their agreement; raise VerificationError before any join."""
    if not references:
        raise VerificationError("a job needs at least one reference bundle (the voter file)")
    if not partners:
        raise VerificationError("a job needs at least one partner bundle")
    loaded_refs = [_load(p) for p in references]
    loaded_partners = [_load(p) for p in partners]
    everything = [*loaded_refs, *loaded_partners]
    for bundle in loaded_refs:
        if bundle.manifest.kind != "reference":
            raise VerificationError(f"{bundle.name} is not a reference bundle (hash it with --reference)")
    for bundle in loaded_partners:
        if bundle.manifest.kind != "partner":
            raise VerificationError(f"{bundle.name} is a reference bundle, given as a partner")
    names = [b.name for b in loaded_partners]
    if len(set(names)) != len(names):
        raise VerificationError("two partner bundles come from the same producer")
    require_same_epoch(
        (b.name, b.manifest.consortium_id, b.manifest.epoch, b.manifest.key_fingerprint)
        for b in everything
    )
    first = everything[0].manifest
    for bundle in everything[1:]:
        if bundle.manifest.spec_digest != first.spec_digest:
            raise VerificationError(
                f"{bundle.name} was hashed with another match spec than {everything[0].name}"
            )
        if [k.name for k in bundle.manifest.keys] != [k.name for k in first.keys]:
            raise VerificationError(f"{bundle.name} has other match keys than {everything[0].name}")
    if consortium is not None:
        _check_consortium(everything, consortium)
    return JobInputs(loaded_refs, loaded_partners, consortium)


def _load(path: Path) -> LoadedBundle:
    manifest = verify_bundle(Path(path))
    return LoadedBundle(manifest.producer.name, manifest, Path(path))


def _check_consortium(bundles: list[LoadedBundle], consortium: Consortium) -> None:
    consortium.verify()
    policy = consortium.policy
    for bundle in bundles:
        m = bundle.manifest
        if (m.consortium_id, m.epoch) != (consortium.consortium_id, consortium.epoch):
            raise VerificationError(
                f"{bundle.name} is from {m.consortium_id} epoch {m.epoch}, not "
                f"{consortium.consortium_id} epoch {consortium.epoch}"
            )
        consortium.member(m.producer.fingerprint)
        if policy.match_spec_digest and m.spec_digest != policy.match_spec_digest:
            raise VerificationError(f"{bundle.name} was hashed with a match spec the consortium did not agree on")
        extra = set(m.attributes) - set(policy.clear_attributes)
        if extra:
            raise VerificationError(
                f"{bundle.name} carries attributes the consortium does not allow: {', '.join(sorted(extra))}"
            )
