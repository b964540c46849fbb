"""The partner side: normalize, tokenize and bundle a contact list.

Every bundle lists its rows sorted by fresh random handles, an order unrelated
to the input's. `hash_frame` works in memory on a polars (or pandas) frame.
`hash_file` reads an input of up to `BUCKET_ROWS` rows (or `IN_MEMORY_BYTES`)
whole and hashes it in handle order, batch by batch; a larger one is streamed
in batches and shuffled through handle-range buckets spilled to disk. Both publish the
bundle and the vault atomically.
"""

from __future__ import annotations

import math
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from cleanroom import normalize
from cleanroom.attributes import COUNT, apply_mapping, protect_attributes, protection_mapping
from cleanroom.bundle import TOKENS_FILE, KeyInfo, Manifest, file_digest, sign_manifest
from cleanroom.errors import InputError, SpecError
from cleanroom.fsutil import staged_dir
from cleanroom.inputs import ROW, is_parquet, read_input
from cleanroom.keys.identity import Identity
from cleanroom.keys.secret import ConsortiumKey
from cleanroom.spec import MatchSpec
from cleanroom.tokens import PACKED, combinations, random_handles, subkeys, token_list, unpacked
from cleanroom.variants import AS_WRITTEN, name_readings, variant_sources

VAULT_FILE = "vault.parquet"
BATCH_ROWS = 500_000
BUCKET_ROWS = 1_000_000
IN_MEMORY_BYTES = 256 * 2**20  # an input whose used columns take at most this much is read whole at any row count
DEFAULT_K = 10
_READ_AHEAD = 2  # buckets prepared while one is written
PARTNER_MIN_BAR = 1.0
"""A partner list drops a gated key's tokens only where it expects its values on more than this many of its own
rows (whatever the spec's bar): its gate keeps frequent values from the broker's counts, while the reference's
gate, at the spec's bar, keeps the key's links precise."""


class FieldStats(BaseModel):
    """Null counts of one mapped input column: missing, or present but invalid."""

    column: str
    field_type: str
    missing: int = 0
    invalid: int = 0
    reasons: dict[str, int] = Field(default_factory=dict)


class HashSummary(BaseModel):
    """What a hash run did, in counts only."""

    rows: int = 0
    rows_with_token: int = 0
    tokens_per_key: dict[str, int] = Field(default_factory=dict)
    fields: list[FieldStats] = Field(default_factory=list)

    def add(self, other: HashSummary) -> None:
        self.rows += other.rows
        self.rows_with_token += other.rows_with_token
        for key, n in other.tokens_per_key.items():
            self.tokens_per_key[key] = self.tokens_per_key.get(key, 0) + n
        if not self.fields:
            self.fields = [f.model_copy(deep=True) for f in other.fields]
            return
        for mine, theirs in zip(self.fields, other.fields, strict=True):
            mine.missing += theirs.missing
            mine.invalid += theirs.invalid
            for reason, n in theirs.reasons.items():
                mine.reasons[reason] = mine.reasons.get(reason, 0) + n


@dataclass(frozen=True)
class HashPlan:
    """The expressions one hash run evaluates on every batch."""

    spec: MatchSpec
    columns: dict[str, str]  # input column -> field type, for columns some key uses
    primaries: dict[str, str]
    attributes: dict[str, str]
    id_column: str | None
    derived: dict[str, pl.Expr]
    variants: dict[str, pl.Expr]  # computed from `derived`, once for every key that uses them
    tokens: dict[str, pl.Expr]  # a key with max_expected_holders has none until `with_rare_value_gates`
    readings: dict[str, list[tuple[pl.Expr, ...]]]  # per key, the field tuples its tokens are made of
    subkeys: dict[str, bytes]
    shares: dict[str, pl.Expr] = field(default_factory=dict)  # per place and column of gated keys: its share
    gates: dict[str, pl.Expr] = field(default_factory=dict)  # per reading of a gated key: rows that keep it

    @classmethod
    def build(
        cls,
        spec: MatchSpec,
        key: ConsortiumKey,
        available: list[str],
        *,
        attributes: dict[str, str] | None = None,
        id_column: str | None = None,
    ) -> HashPlan:
        columns = spec.resolve_columns([c for c in available if c != ROW])
        attributes = attributes or {}
        for name, column in attributes.items():
            if name not in spec.allowed_attributes:
                raise SpecError(f"attribute {name!r} is not in the spec's allowed_attributes")
            if column not in available:
                raise SpecError(f"attribute column {column!r} is not in the input")
        if id_column is not None and id_column not in available:
            raise SpecError(f"id column {id_column!r} is not in the input")
        variant_fields = {v.partition(":")[2] for k in spec.all_keys for v in k.variants}  # deletions:<field>
        used = {f for k in spec.all_keys for f in k.fields} | {AS_WRITTEN[f] for f in variant_fields & AS_WRITTEN.keys()}
        derived: dict[str, pl.Expr] = {}
        sources: dict[str, list[str]] = {}
        primaries: dict[str, str] = {}  # column -> its first derived field a key uses
        for i, (column, field_type) in enumerate(columns.items()):
            is_generic = field_type in spec.generic_fields
            produced = normalize.derive(
                "generic" if is_generic else field_type,
                pl.col(column),
                default_region=spec.default_region,
            )
            for field_name, expr in produced.items():
                field_name = field_type if is_generic else field_name
                if field_name in used:
                    name = f"__f{i}:{field_name}"
                    derived[name] = expr
                    sources.setdefault(field_name, []).append(name)
                    primaries.setdefault(column, name)
        names = name_readings(spec, columns, used, derived)
        columns = {column: columns[column] for column in primaries}
        secret_subkeys = subkeys(key, [k.name for k in spec.all_keys])
        variants = _SharedColumns("__v")
        readings = {
            match_key.name: [
                combo
                for alternatives in variant_sources(match_key, sources, names)
                for combo in combinations([[variants.column(e) for e in f] for f in alternatives])
            ]
            for match_key in spec.all_keys
        }
        tokens = {
            match_key.name: token_list(readings[match_key.name], secret_subkeys[match_key.name])
            if readings[match_key.name] and match_key.max_expected_holders is None
            else pl.lit(None, dtype=pl.List(PACKED))
            for match_key in spec.all_keys
        }
        return cls(spec, columns, primaries, attributes, id_column, derived, variants.exprs, tokens, readings,
                   secret_subkeys)

    def with_rare_value_gates(self, batches: Iterable[pl.DataFrame], *, reference: bool) -> HashPlan:
        """The plan with the tokens of its keys with `max_expected_holders`, from one pass over the input's
        `batches`: each reading of a row (as given, swapped, from the email, a deletion, a second column...)
        is kept where rows times the product of its values' shares is at most the bar (for a partner list at
        least PARTNER_MIN_BAR). A value's share is the part of the rows that read it at that place of the key
        in any of their readings, so a swapped "Smith, John" counts as common as the John Smiths it meets."""
        keys = [k for k in self.spec.all_keys if k.max_expected_holders is not None and self.readings[k.name]]
        places = {  # per key and place, the columns its readings take the value from, each once
            (k.name, place): tuple(dict.fromkeys(r[place].meta.output_name() for r in self.readings[k.name]))
            for k in keys for place in range(len(k.fields))
        }
        number = {place: n for n, place in enumerate(dict.fromkeys(places.values()))}  # keys may share a place
        rows, counts = self._value_counts(batches, list(number)) if keys else (0, {})
        if not rows:
            return self  # no gated key, or no rows and so no tokens
        shares: dict[str, pl.Expr] = {}
        gates: dict[str, pl.Expr] = {}
        tokens = dict(self.tokens)
        for k in keys:
            bar = k.max_expected_holders if reference else max(k.max_expected_holders, PARTNER_MIN_BAR)
            kept = []
            for i, reading in enumerate(self.readings[k.name]):
                expected = pl.lit(float(rows))
                for place, value in enumerate(reading):
                    counted = counts[places[k.name, place]]
                    name = f"__s{number[places[k.name, place]]}:{value.meta.output_name()}"
                    shares[name] = value.replace_strict(counted["value"], counted["len"] / rows, default=None)
                    expected = expected * pl.col(name)
                # null where a value is: no token then anyway; the margin keeps a product equal to the bar
                # on the right side of float rounding, whatever the order of the multiplications
                gates[f"__g:{k.name}:{i}"] = expected <= bar * (1 + 1e-9)
                kept.append(tuple(pl.when(pl.col(f"__g:{k.name}:{i}")).then(value) for value in reading))
            tokens[k.name] = token_list(kept, self.subkeys[k.name])
        return replace(self, shares=shares, gates=gates, tokens=tokens)

    def _value_counts(self, batches: Iterable[pl.DataFrame], places: list[tuple[str, ...]]
                      ) -> tuple[int, dict[tuple[str, ...], pl.DataFrame]]:
        """Rows, and per place (the columns one place of a key reads from) how many rows read each value
        there (`value`, `len`), a row counting a value once; only the columns the places need are derived."""
        read = {c for place in places for c in place}
        variants = {n: e for n, e in self.variants.items() if n in read}
        read |= {n for e in variants.values() for n in e.meta.root_names()}
        derived = {n: e for n, e in self.derived.items() if n in read}
        rows, found = 0, {place: [] for place in places}
        for batch in batches:
            work = batch.with_columns(**derived).with_columns(**variants)
            rows += work.height
            for place in places:
                stacked = pl.concat([work.select(ROW, pl.col(c).alias("value")) for c in place]).drop_nulls()
                once = stacked.unique() if len(place) > 1 else stacked  # a row (ROW, unique) counts a value once
                found[place].append(once.group_by("value").len())
        if not rows:
            return 0, {}
        return rows, {place: pl.concat(c).group_by("value").agg(pl.col("len").sum()) for place, c in found.items()}

    def input_columns(self) -> list[str]:
        """The input columns a run reads (others are not even decoded)."""
        roots = [name for expr in self.derived.values() for name in expr.meta.root_names()]
        extra = [self.id_column] if self.id_column else []
        return list(dict.fromkeys([ROW, *roots, *self.attributes.values(), *extra]))

    def attribute_exprs(self) -> list[pl.Expr]:
        """Clear attributes as given, trimmed with inner whitespace collapsed; blank -> null."""
        exprs = []
        for name, column in self.attributes.items():
            value = pl.col(column).cast(pl.String).str.replace_all(r"\s+", " ").str.strip_chars()
            exprs.append(pl.when(value != "").then(value).alias(name))
        return exprs

    def run(self, batch: pl.DataFrame, handles: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame, HashSummary]:
        """Tokens, vault and counts of one batch, its rows taking `handles` in order."""
        work = batch.rechunk().with_columns(handles, **self.derived).with_columns(**self.variants)
        work = work.with_columns(**self.shares).with_columns(**self.gates)
        tokens = work.select(
            "handle", *[e.alias(k) for k, e in self.tokens.items()], *self.attribute_exprs()
        )
        vault = work.select(
            "handle",
            pl.col(ROW).cast(pl.UInt64).alias("row"),
            (pl.col(self.id_column).cast(pl.String) if self.id_column else pl.lit(None, pl.String)).alias("id"),
        )
        return tokens, vault, self._summary(work, tokens)

    def _summary(self, work: pl.DataFrame, tokens: pl.DataFrame) -> HashSummary:
        has_token = pl.any_horizontal([pl.col(k).is_not_null() for k in self.tokens])
        counted = tokens.select(
            pl.len().alias("rows"),
            has_token.sum().alias("with_token"),
            *[pl.col(k).is_not_null().sum().alias(f"key:{k}") for k in self.tokens],
        ).row(0, named=True)
        summary = HashSummary(
            rows=counted["rows"],
            rows_with_token=counted["with_token"],
            tokens_per_key={k: counted[f"key:{k}"] for k in self.tokens},
        )
        for column, field_type in self.columns.items():
            # a normalized value implies a present one: only rows without one are looked at
            unusable = work.select(column, self.primaries[column]).filter(pl.col(self.primaries[column]).is_null())
            invalid = unusable.filter(pl.col(column).cast(pl.String).str.contains(r"\S").fill_null(False))
            reasons: dict[str, int] = {}
            if field_type == "email" and invalid.height:
                counts = invalid.group_by(normalize.email_invalid_reason(pl.col(column)).alias("reason")).len()
                reasons = {r: n for r, n in counts.iter_rows() if r is not None}
            summary.fields.append(
                FieldStats(
                    column=column, field_type=field_type, reasons=reasons,
                    missing=unusable.height - invalid.height, invalid=invalid.height,
                )
            )
        return summary


class _SharedColumns:
    """Expressions that several match keys use (a deletion variant of a name...), each given one column."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.exprs = prefix, {}
        self._by_text: dict[str, list[str]] = {}

    def column(self, expr: pl.Expr) -> pl.Expr:
        """`expr` itself if it is a column, else the column computing it (the same one for an equal expression)."""
        if expr.meta.is_column():
            return expr
        names = self._by_text.setdefault(str(expr), [])
        name = next((n for n in names if self.exprs[n].meta.eq(expr)), None)
        if name is None:
            name = f"{self.prefix}{len(self.exprs)}"
            self.exprs[name] = expr
            names.append(name)
        return pl.col(name)


def hash_frame(
    frame: Any,
    key: ConsortiumKey,
    spec: MatchSpec,
    *,
    attributes: dict[str, str] | None = None,
    id_column: str | None = None,
    reference: bool = False,
    k: int = DEFAULT_K,
) -> tuple[pl.DataFrame, pl.DataFrame, HashSummary]:
    """Hash an in-memory frame: (tokens in random order, vault, summary).

    Accepts a polars or pandas frame. The tokens frame has the bundle's schema;
    clear attributes are protected so every combination occurs in >= k rows.
    Keys with `max_expected_holders` are gated as for a partner list, or with
    `reference` as for the voter file (see `HashPlan.with_rare_value_gates`).
    """
    df = frame if isinstance(frame, pl.DataFrame) else pl.from_pandas(frame)
    df = df.with_row_index(ROW, offset=1)
    plan = HashPlan.build(spec, key, df.columns, attributes=attributes, id_column=id_column)
    plan = _gated(plan, [df], reference, "the frame")
    order, handles = _sorted_handles(df.height)
    try:
        tokens, vault, summary = plan.run(df[order], pl.Series("handle", handles, dtype=PACKED))
    except pl.exceptions.PolarsError:
        raise InputError("a row of the frame could not be normalized (an unexpected value type?)") from None
    _require_tokens(summary)
    if plan.attributes:
        tokens, _ = protect_attributes(tokens, list(plan.attributes), k)
    return pl.from_arrow(unpacked(tokens)), pl.from_arrow(unpacked(vault)), summary


def hash_file(
    input_path: Path,
    out: Path,
    vault_dir: Path,
    *,
    key: ConsortiumKey,
    identity: Identity,
    spec: MatchSpec,
    attributes: dict[str, str] | None = None,
    id_column: str | None = None,
    reference: bool = False,
    k: int = DEFAULT_K,
    encoding: str = "utf-8",
    delimiter: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Manifest, HashSummary]:
    """Hash a CSV/Parquet file into a signed bundle at `out` and a vault at `vault_dir`.

    Nothing is left at either path unless the whole run succeeds. Clear
    attributes are protected so every combination occurs in at least `k` rows
    (see `cleanroom.attributes`). `progress(done_rows, total_rows)` is called
    after every batch.
    """
    warm_up()  # while the input is scanned
    lf = read_input(Path(input_path), encoding=encoding, delimiter=delimiter)
    plan = HashPlan.build(
        spec, key, lf.collect_schema().names(), attributes=attributes, id_column=id_column
    )
    if out.resolve() == vault_dir.resolve():
        raise InputError("--out and --vault must be different folders")
    total = _count_rows(lf, Path(input_path).name)
    names = list(plan.attributes)
    protection = None
    if names:
        combos = lf.select(plan.attribute_exprs()).group_by(names).agg(pl.len().alias(COUNT)).collect()
        mapping, protection = protection_mapping(combos, names, k)
    summary = HashSummary()
    name = Path(input_path).name
    source = lf.select(plan.input_columns())
    with (
        tempfile.TemporaryDirectory(prefix="cleanroom-hash-") as scratch,
        staged_dir(out) as bundle_tmp,
        staged_dir(vault_dir) as vault_tmp,
    ):
        tokens_file, vault = _ParquetFile(bundle_tmp / TOKENS_FILE), _ParquetFile(vault_tmp / VAULT_FILE)
        read_whole = total <= BUCKET_ROWS or _decoded_size(Path(input_path), plan.input_columns()) <= IN_MEMORY_BYTES
        shuffle = None if read_whole else _Shuffle(Path(scratch), total)
        if shuffle:
            plan = _gated(plan, _batches(source, name), reference, f"input file {name}")
            batches = ((batch, random_handles(batch.height)) for batch in _batches(source, name))
        else:
            with ThreadPoolExecutor(1) as helper:
                drawn = helper.submit(_sorted_handles, total)  # while the input is read
                frame = _collect(source, name)
            if frame.height != total:
                raise InputError(f"input file {name} changed while it was read")
            plan = _gated(plan, frame.iter_slices(BATCH_ROWS), reference, f"input file {name}")
            batches = _in_handle_order(frame, *drawn.result(), BATCH_ROWS)
        add_tokens = shuffle.add if shuffle else tokens_file.add
        # batch i is written (tokens and vault on two threads) while batch i+1 is computed; one in flight bounds memory
        stored: list[Future] = []
        try:
            with ThreadPoolExecutor(2) as writers:
                for batch, handles in batches:
                    try:
                        tokens, rows, batch_summary = plan.run(batch, handles)
                    except pl.exceptions.PolarsError:
                        raise InputError(
                            f"{name}: a row between rows {batch[ROW].min()} and {batch[ROW].max()} could not be "
                            "normalized (an unexpected value type?)"
                        ) from None
                    if names:
                        tokens = apply_mapping(tokens, mapping, names)
                    summary.add(batch_summary)
                    for done in stored:
                        done.result()
                    stored = [writers.submit(add_tokens, tokens), writers.submit(vault.add, rows)]
                    if progress:
                        progress(summary.rows, total)
                for done in stored:
                    done.result()
            _require_tokens(summary)
            if shuffle:
                shuffle.write(tokens_file)
        finally:
            tokens_file.close()
            vault.close()
        manifest = Manifest(
            kind="reference" if reference else "partner",
            consortium_id=key.consortium_id,
            epoch=key.epoch,
            key_fingerprint=key.fingerprint,
            spec_name=spec.name,
            spec_digest=spec.digest(),
            normalizer_versions=normalize.versions(),
            row_count=summary.rows,
            keys=[
                KeyInfo(name=k.name, fields=k.fields, variants=k.variants, checked_by=k.checked_by,
                        checks_only=k.checks_only, max_expected_holders=k.max_expected_holders,
                        non_null=summary.tokens_per_key[k.name])
                for k in spec.all_keys
            ],
            attributes=names,
            attribute_protection=protection,
            tokens_digest=file_digest(bundle_tmp / TOKENS_FILE),
            producer=identity.card,
        )
        sign_manifest(bundle_tmp, manifest, identity)
    return manifest, summary


@cache
def warm_up() -> threading.Thread:
    """Load (or on first use compile) the compiled kernels in the background, once per process; returns the thread.

    Not a daemon thread: a process that exits while numba initializes in a
    daemon thread aborts, so an early error waits for the load instead.
    """
    thread = threading.Thread(target=_run_kernels)
    thread.start()
    return thread


def _run_kernels() -> None:
    """Normalize and tokenize one tiny row, which runs every compiled kernel of the hash path once."""
    sample = pl.DataFrame({"email": ["a@b.co"], "phone": ["+15035550100"]})
    fields = [normalize.derive(t, pl.col(t))[t] for t in sample.columns]
    sample.select(token_list([(f,) for f in fields], bytes(32)))


def _gated(plan: HashPlan, batches: Iterable[pl.DataFrame], reference: bool, what: str) -> HashPlan:
    """`plan.with_rare_value_gates`, a failure of its read of the whole input an InputError naming no value."""
    try:
        return plan.with_rare_value_gates(batches, reference=reference)
    except pl.exceptions.PolarsError:
        raise InputError(f"{what} could not be parsed or normalized (malformed CSV, an unexpected value type?)"
                         ) from None


def _require_tokens(summary: HashSummary) -> None:
    if summary.rows == 0:
        raise InputError("the input has no data rows")
    if summary.rows_with_token == 0:
        raise InputError(
            f"none of the {summary.rows} rows yields a token: every mapped field is "
            "missing or invalid (check the column mapping with --map)"
        )


def _count_rows(lf: pl.LazyFrame, name: str) -> int:
    try:
        return lf.select(pl.len()).collect().item()
    except pl.exceptions.PolarsError:
        raise InputError(f"input file {name} could not be parsed (malformed CSV?)") from None


def _batches(lf: pl.LazyFrame, name: str):
    try:
        yield from lf.collect_batches(chunk_size=BATCH_ROWS)
    except pl.exceptions.PolarsError:
        raise InputError(f"input file {name} could not be parsed (malformed CSV?)") from None


def _decoded_size(path: Path, columns: list[str]) -> int:
    """About how many bytes `columns` of the input take in memory: from Parquet metadata, else the file's size."""
    if not is_parquet(path):
        return path.stat().st_size
    meta = pq.ParquetFile(path).metadata
    groups = [meta.row_group(g) for g in range(meta.num_row_groups)]
    return sum(
        chunk.total_uncompressed_size
        for group in groups
        for chunk in (group.column(c) for c in range(group.num_columns))
        if chunk.path_in_schema in columns
    )


def _collect(lf: pl.LazyFrame, name: str) -> pl.DataFrame:
    try:
        return lf.collect().rechunk()  # a gather over chunks is ten times slower
    except pl.exceptions.PolarsError:
        raise InputError(f"input file {name} could not be parsed (malformed CSV?)") from None


def _sorted_handles(n: int) -> tuple[pl.Series, np.ndarray]:
    """n fresh random handles, ascending, and the rows that take them: a uniformly random order of 0..n-1."""
    raw = random_handles(n).to_numpy().copy()
    prefix = _prefix(raw)
    order = pl.Series(prefix).arg_sort()
    raw[:, :8] = prefix[order.to_numpy()].view(np.uint8).reshape(-1, 8)  # sorted by prefix (the rest is random too)
    return order, raw


def _in_handle_order(
    frame: pl.DataFrame, order: pl.Series, handles: np.ndarray, batch_rows: int
) -> Iterator[tuple[pl.DataFrame, pl.Series]]:
    """Batches of the frame's rows in handle order, each with its handles."""
    for start in range(0, frame.height, batch_rows):
        rows = order.slice(start, batch_rows)
        yield frame[rows], pl.Series("handle", handles[start : start + rows.len()], dtype=PACKED)


class _ParquetFile:
    """A Parquet file written batch by batch (bundle tokens, vault)."""

    def __init__(self, path: Path) -> None:
        self.path, self.writer = path, None

    def add(self, frame: pl.DataFrame) -> None:
        self.add_table(unpacked(frame))

    def add_table(self, table: pa.Table) -> None:
        self.writer = self.writer or _parquet_writer(self.path, table.schema)
        self.writer.write_table(table.cast(self.writer.schema))

    def close(self) -> None:
        if self.writer:
            self.writer.close()
            self.writer = None


class _Shuffle:
    """Rows of a large input in handle order with bounded memory.

    A row's bucket is the range its random handle falls in, so the buckets,
    spilled to Arrow IPC files in `scratch`, then each sorted by handle and
    written one after the other, give a file sorted by handle.
    """

    def __init__(self, scratch: Path, rows: int) -> None:
        self.scratch, self.batches = scratch, 0
        self.buckets = max(_READ_AHEAD, math.ceil(rows / BUCKET_ROWS))

    def add(self, tokens: pl.DataFrame) -> None:
        # bucket = floor(prefix * buckets / 2**64), in 64-bit arithmetic
        bucket = (_handle_prefix(tokens) >> np.uint64(32)) * np.uint64(self.buckets) >> np.uint64(32)
        parts = tokens.with_columns(pl.Series("__bucket", bucket)).partition_by(
            "__bucket", as_dict=True, include_key=False
        )
        for (b,), part in parts.items():
            part.write_ipc(self.scratch / f"b{b}-{self.batches}.arrow", compression="uncompressed")
        self.batches += 1

    def _sorted_bucket(self, b: int) -> pa.Table | None:
        frames = [pl.read_ipc(f) for f in sorted(self.scratch.glob(f"b{b}-*.arrow"))]
        if not frames:
            return None
        bucket = pl.concat(frames).rechunk()  # a gather over chunks is ten times slower
        return unpacked(bucket[pl.Series(_handle_prefix(bucket)).arg_sort()])

    def write(self, out: _ParquetFile) -> None:
        """Write the buckets in order; the next ones are read and sorted (on two threads) while one is written."""
        with ThreadPoolExecutor(_READ_AHEAD) as readers:
            upcoming = deque(readers.submit(self._sorted_bucket, b) for b in range(min(_READ_AHEAD, self.buckets)))
            for b in range(self.buckets):
                bucket = upcoming.popleft().result()
                if b + _READ_AHEAD < self.buckets:
                    upcoming.append(readers.submit(self._sorted_bucket, b + _READ_AHEAD))
                if bucket is not None:
                    out.add_table(bucket)


def _prefix(handles: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each (n, 16) handle as a big-endian integer (as random as the whole handle)."""
    return np.ascontiguousarray(handles[:, :8]).view(">u8").ravel()


def _handle_prefix(frame: pl.DataFrame) -> np.ndarray:
    return _prefix(frame["handle"].to_numpy()).astype(np.uint64)


def _parquet_writer(target: Path, schema) -> pq.ParquetWriter:
    """Plain Parquet for random bytes: no compression, dictionaries or statistics to gain."""
    return pq.ParquetWriter(
        target, schema, compression="none", use_dictionary=False, write_statistics=False, store_schema=False
    )
