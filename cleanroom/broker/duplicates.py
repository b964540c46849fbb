"""People listed more than once in one partner list, for the scored linker.

Rows of one list are one person when they share an email or phone token (the
same links as person resolution), or a token of a key holding one of the
field sets in SAME_PERSON (a name and the birth date, both names and the house
number, the birth date and the house number...), or tokens of keys of every
field set of an entry of SAME_PERSON_TOGETHER (both names and the zip code,
canonical and phonetic, together): two sign-ups of one voter
often carry different emails, numbers or addresses, while two different people
of one list seldom share those. The scored linker is one-to-one between a list's
persons and reference rows: a person who signed up twice is linked on both
rows, as the cascade links them, while two different people still never share
a reference row.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

from cleanroom.broker.load import LoadedBundle
from cleanroom.broker.persons import linking_keys
from cleanroom.bundle import KeyInfo
from cleanroom.variants import shown_fields

NAME_FIELDS = ("first", "last")  # field name prefixes: first, first_canon, last_phonetic...
# Field sets that two different people of one list seldom share (in the synthetic hard-profile lists, 0 to 9
# pairs of different people per key against 135 to 444 of one person). Not: a name, a year and a zip code
# (namesakes of one age), both names and a zip code alone (namesakes; see SAME_PERSON_TOGETHER), the last name and an
# address (a household).
# Twins at one address, or a father and son of one name and address, are merged: only one of them is linked.
SAME_PERSON = (
    {"first", "dob"}, {"last", "dob"},
    {"first", "last", "birth_year"}, {"first", "last", "house_number"},
    {"dob", "house_number"}, {"first", "house_number", "street"},
)
# Field sets that make rows one person only together: rows sharing a token of a key of each set (any key of
# exactly those fields, variants included). Both names and the zip code, as canonical names and as the phonetic
# codes of the names as written: namesakes share them, but the scored linker compares only rows contending for
# one reference row (`scoring.contending_rows`), where two people of one name and zip code are rare, and the
# written names keep a nickname apart from the full name (in the synthetic hard lists, the canonical names and
# zip code alone merged a voter with an unregistered namesake of his, both linked to a third).
SAME_PERSON_TOGETHER = (({"first_canon", "last", "zip5"}, {"first_phonetic", "last_phonetic", "zip5"}),)
THREADS = 2  # keys read at once: reading a column is single-threaded
MAX_SHARING = 20  # a token on more rows of one list than this links none of them (a placeholder value)


def same_person_keys(keys: list[KeyInfo]) -> list[str]:
    """Keys whose shared token makes two rows of one list one person: those holding one of SAME_PERSON's
    field sets (a name field in any form counts as its name)."""
    def groups(fields: list[str]) -> set[str]:
        return {next((n for n in NAME_FIELDS if f.startswith(n)), f) for f in fields}
    return [k.name for k in keys if any(need <= groups(shown_fields(k)) for need in SAME_PERSON)]


def together_keys(keys: list[KeyInfo]) -> list[tuple[list[str], ...]]:
    """Per entry of SAME_PERSON_TOGETHER whose every field set is held by keys: per field set, those keys."""
    held = [tuple([k.name for k in keys if set(shown_fields(k)) == s] for s in sets)
            for sets in SAME_PERSON_TOGETHER]
    return [names for names in held if all(names)]


def components(n_rows: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of rows 0..n_rows-1 joined by edges (a, b): each row labelled by its smallest row."""
    labels = np.arange(n_rows, dtype=np.int64)
    while True:
        low = np.minimum(labels[a], labels[b])
        before = labels.copy()
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        labels = labels[labels]  # pointer jumping: every row to its label's label
        if np.array_equal(labels, before):
            return labels


def shared_rows(tokens: pl.DataFrame) -> pl.DataFrame:
    """Edges (p_idx, first) from each row to the first row of the list holding the same token, for one key's
    (p_idx, token) pairs; tokens on more than MAX_SHARING rows make none.

    Sorted by token, a token held more than once sits next to its twin, so the
    repeated ones are found by comparing neighbours (cheaper than hashing millions
    of deletion-variant tokens) before any grouping.
    """
    token, row = pl.col("token"), pl.col("p_idx")
    return (
        tokens.sort("token")
        .filter((token == token.shift(1)) | (token == token.shift(-1)))
        .unique()
        .with_columns(pl.len().over("token").alias("rows"), row.min().over("token").alias("first"))
        .filter((pl.col("rows") <= MAX_SHARING) & (row != pl.col("first")))
        .select("p_idx", "first")
    )


def shared_pairs(tokens: pl.DataFrame) -> pl.DataFrame:
    """Pairs of rows (p_idx, first), first < p_idx, holding one token, for one key's (p_idx, token) pairs; tokens
    on more than MAX_SHARING rows make none."""
    token = pl.col("token")
    repeated = (
        tokens.sort("token").filter((token == token.shift(1)) | (token == token.shift(-1))).unique()
        .filter(pl.len().over("token") <= MAX_SHARING)
    )
    return (
        repeated.join(repeated.rename({"p_idx": "first"}), on="token")
        .filter(pl.col("first") < pl.col("p_idx")).select("p_idx", "first").unique()
    )


def person_keys(bundle: LoadedBundle) -> list[str]:
    """The keys whose shared tokens make rows of one list one person: email, phone, and `same_person_keys`."""
    return [*linking_keys(bundle), *same_person_keys(bundle.manifest.keys)]


def persons_from(n_rows: int, edges: list[pl.DataFrame]) -> pl.Series:
    """A person label per row (the smallest row of its component) from `shared_rows` edges."""
    both = pl.concat(edges) if edges else pl.DataFrame(schema={"p_idx": pl.UInt32, "first": pl.UInt32})
    labels = components(n_rows, both.get_column("p_idx").to_numpy(), both.get_column("first").to_numpy())
    return pl.Series("list_person", labels.astype(np.uint32))


def list_persons(bundle: LoadedBundle, rows: pl.Series | None = None) -> pl.Series:
    """A person label per row of one partner bundle, in row order: rows sharing a token of an email or phone
    key, or of a SAME_PERSON key, or tokens of keys of every field set of a SAME_PERSON_TOGETHER entry, share it.

    With `rows` (row indices), only those rows' tokens are compared and the other rows stay alone: the scored
    linker asks only about rows that contend for a reference row, which spares sorting every row's
    deletion-variant tokens. Its persons are then parts of the persons of all rows, never merged further.
    """
    def tokens(key: str) -> pl.DataFrame:
        frame = bundle.scan().with_row_index("p_idx")
        if rows is not None:
            frame = frame.filter(pl.col("p_idx").is_in(rows.cast(pl.UInt32).implode()))
        return (
            frame.select("p_idx", pl.col(key).alias("token")).explode("token").drop_nulls("token")
            .select("p_idx", pl.col("token").bin.reinterpret(dtype=pl.UInt128, endianness="big"))
            .collect()
        )

    def together(names: tuple[list[str], ...]) -> pl.DataFrame:
        found = [pl.concat([shared_pairs(tokens(name)) for name in group]).unique() for group in names]
        both = found[0]
        for more in found[1:]:
            both = both.join(more, on=["p_idx", "first"], how="semi")
        return both

    with ThreadPoolExecutor(THREADS) as pool:
        edges = list(pool.map(lambda key: shared_rows(tokens(key)), person_keys(bundle)))
        edges += list(pool.map(together, together_keys(bundle.manifest.keys)))
        return persons_from(bundle.manifest.row_count, edges)
