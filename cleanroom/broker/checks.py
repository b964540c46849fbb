"""Checking keys: hits of the cascade that another key contradicts are not taken.

A key with `checked_by` links on fewer fields than a checking key (names and
zip code against names, birth year and zip code). When a partner row hits a
reference row by it, and both rows carry tokens of a checking key but share
none, a field only the checking key holds disagrees: an unregistered namesake
born in another year, not the voter. The row is then not linked to that
reference row by that key or any later one, and neither is every row sharing
an email token with it, in any list: one person's birth year holds on all its
rows, including those listed without one.

The broker learns nothing new by it: that two rows agree on one key and not on
another is what the cascade's conflicts and the scorer's patterns show too.
"""

from __future__ import annotations

import polars as pl

from cleanroom.broker.load import LoadedBundle

_PAIR = ["p_idx", "ref_idx"]
NONE_DROPPED = pl.DataFrame(schema={"partner": pl.String, "p_idx": pl.UInt32, "ref_idx": pl.UInt32, "rank": pl.UInt8})


def drop_contradicted(
    reference: LoadedBundle, partners: list[LoadedBundle], hits: dict[str, pl.DataFrame]
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """The hits (p_idx, ref_idx, rank) of each partner without contradicted ones (from the first checked key
    on), and the hits dropped (partner, p_idx, ref_idx, rank)."""
    keys = reference.manifest.keys
    checked = {rank: key.checked_by for rank, key in enumerate(keys) if key.checked_by}
    if not checked:
        return hits, NONE_DROPPED
    theirs = {name: reference.token_pairs(name, "ref_idx").collect()
              for name in sorted({c for names in checked.values() for c in names})}
    carriers = {name: pairs.select("ref_idx").unique() for name, pairs in theirs.items()}
    dropped = {p.name: _contradicted(theirs, carriers, p, hits[p.name], checked) for p in partners}
    dropped = _through_emails(partners, dropped, [k.name for k in keys if k.fields == ["email"]])
    kept, lost = {}, []
    for partner in partners:
        frame = hits[partner.name]
        gone = frame.filter(pl.col("rank") >= min(checked)).join(dropped[partner.name], on=_PAIR, how="semi")
        kept[partner.name] = frame.join(gone, on=[*_PAIR, "rank"], how="anti")
        lost.append(gone.select(pl.lit(partner.name).alias("partner"), *_PAIR, "rank"))
    return kept, pl.concat(lost)


def _contradicted(theirs: dict[str, pl.DataFrame], carriers: dict[str, pl.DataFrame], partner: LoadedBundle,
                  hits: pl.DataFrame, checked: dict[int, list[str]]) -> pl.DataFrame:
    """(p_idx, ref_idx) of the checked keys' hits whose two rows carry a checking key's tokens and share none.

    Per checking key, `theirs` holds the reference's (ref_idx, token) pairs, `carriers` its rows with one."""
    found = []
    for name, pairs_of_reference in theirs.items():
        pairs = hits.filter(pl.col("rank").is_in([r for r, names in checked.items() if name in names])).select(_PAIR)
        mine = partner.token_pairs(name, "p_idx").collect()
        pairs = pairs.join(mine.select("p_idx").unique(), on="p_idx", how="semi")
        pairs = pairs.join(carriers[name], on="ref_idx", how="semi")
        relevant = pairs_of_reference.join(pairs.select("ref_idx").unique(), on="ref_idx", how="semi")
        agree = pairs.join(mine, on="p_idx").join(relevant, on=["token", "ref_idx"], how="semi").select(_PAIR)
        found.append(pairs.join(agree, on=_PAIR, how="anti"))
    return pl.concat(found).unique() if found else pl.DataFrame(schema=dict.fromkeys(_PAIR, pl.UInt32))


def _through_emails(partners: list[LoadedBundle], dropped: dict[str, pl.DataFrame],
                    email_keys: list[str]) -> dict[str, pl.DataFrame]:
    """`dropped` plus, per partner, (p_idx, ref_idx) of rows sharing an email token with a dropped pair's row."""
    if not email_keys:
        return dropped
    emails = {
        p.name: pl.concat([p.token_pairs(key, "p_idx") for key in email_keys]).unique().collect() for p in partners
    }
    wrong = pl.concat(
        [dropped[name].join(emails[name], on="p_idx").select("token", "ref_idx") for name in emails]
    ).unique()
    return {
        name: pl.concat([dropped[name], emails[name].join(wrong, on="token").select(_PAIR)]).unique()
        for name in emails
    }
