"""Match-quality evaluation on hand-made cases and on a perfect synthetic match."""

from __future__ import annotations

import json
import os

import numpy as np
import polars as pl
import pytest

from cleanroom.cli import main
from cleanroom.errors import InputError
from cleanroom.evaluate import evaluate
from cleanroom.synth import generate_partners, generate_voters, write_frame


def _h(label: str) -> bytes:
    return label.encode().ljust(16, b"\0")


def _vault(handles: list[str], ids: list[str | None] | None = None) -> pl.DataFrame:
    return pl.DataFrame({
        "handle": [_h(h) for h in handles],
        "row": list(range(1, len(handles) + 1)),
        "id": ids if ids is not None else [None] * len(handles),
    }, schema={"handle": pl.Binary, "row": pl.Int64, "id": pl.String})


def _matches(rows: list[tuple[str, str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"partner": [r[0] for r in rows], "partner_handle": [_h(r[1]) for r in rows],
         "reference_handle": [_h(r[2]) for r in rows], "rule": [r[3] for r in rows]},
        schema={"partner": pl.String, "partner_handle": pl.Binary,
                "reference_handle": pl.Binary, "rule": pl.String})


@pytest.fixture()
def case() -> tuple[dict, dict, pl.DataFrame]:
    """Partner a: rows 1-4 are voters V1, V2, (not registered), V3; partner b: V1, V4."""
    truth = {
        "a": pl.DataFrame({"row": [1, 2, 3, 4], "person_id": [1, 2, 90, 3],
                           "voter_id": ["V1", "V2", None, "V3"]}),
        "b": pl.DataFrame({"row": [1, 2], "person_id": [1, 4], "voter_id": ["V1", "V4"]}),
    }
    vaults = {"a": _vault(["a1", "a2", "a3", "a4"]), "b": _vault(["b1", "b2"])}
    reference = _vault(["r1", "r2", "r3", "r4"], ["V1", "V2", "V3", "V4"])
    return truth, vaults, reference


def test_hand_made_case(case) -> None:
    truth, vaults, reference = case
    matches = _matches([
        ("a", "a1", "r1", "email"),   # correct
        ("a", "a1", "r1", "phone"),   # the same link again: counted once
        ("a", "a2", "r4", "phone"),   # wrong voter
        ("a", "a3", "r3", "name"),    # person not registered
        ("b", "b1", "r1", "email"),   # correct; row a4 and b2 are missed
    ])
    ev = evaluate(matches, truth, vaults, reference)
    o = ev.overall
    assert (o.rows, o.registered, o.predicted, o.true_positives) == (6, 5, 4, 2)
    assert (o.false_positives, o.false_positives_unregistered, o.false_negatives) == (2, 1, 3)
    assert o.precision == pytest.approx(0.5) and o.recall == pytest.approx(0.4)
    assert o.f1 == pytest.approx(2 * 0.5 * 0.4 / 0.9)
    a = ev.partners["a"]
    assert (a.predicted, a.true_positives, a.registered) == (3, 1, 3)
    assert a.precision == pytest.approx(1 / 3) and a.recall == pytest.approx(1 / 3)
    assert ev.partners["b"].precision == 1.0 and ev.partners["b"].recall == 0.5
    assert ev.rules["email"].precision == 1.0 and ev.rules["email"].true_positives == 2
    assert ev.rules["phone"].precision == 0.0 and ev.rules["name"].false_positives_unregistered == 1
    pair = ev.pairs[0]
    assert pair.lists == ("a", "b")
    assert (pair.truth_all, pair.truth_registered, pair.found, pair.found_correct) == (1, 1, 1, 1)
    assert [(w.lists, w.truth_all, w.truth_registered, w.found) for w in ev.n_way] == [
        (1, 4, 3, 2), (2, 1, 1, 1)]
    assert json.loads(ev.to_json())["overall"]["true_positives"] == 2


def test_duplicate_rows_of_one_person_count_per_row(case) -> None:
    truth, vaults, reference = case
    truth["a"] = truth["a"].with_columns(voter_id=pl.Series(["V1", "V1", None, "V3"]),
                                         person_id=pl.Series([1, 1, 90, 3]))
    ev = evaluate(_matches([("a", "a1", "r1", "email"), ("a", "a2", "r1", "phone")]),
                  {"a": truth["a"]}, {"a": vaults["a"]}, reference)
    assert ev.overall.true_positives == 2 and ev.overall.recall == pytest.approx(2 / 3)
    assert ev.n_way[0].found == 1


def test_unknown_handles_and_partners_are_input_errors(case) -> None:
    truth, vaults, reference = case
    with pytest.raises(InputError, match="partner handle"):
        evaluate(_matches([("a", "zz", "r1", "email")]), truth, vaults, reference)
    with pytest.raises(InputError, match="reference handle"):
        evaluate(_matches([("a", "a1", "zz", "email")]), truth, vaults, reference)
    with pytest.raises(InputError, match="no ground truth"):
        evaluate(_matches([("c", "a1", "r1", "email")]), truth, vaults, reference)


def _perfect(truth: dict[str, pl.DataFrame], voters: pl.DataFrame, rng: np.random.Generator):
    """Vaults with random handles and a match table linking every registered row correctly."""
    reference = pl.DataFrame({
        "handle": pl.Series([os.urandom(16) for _ in range(len(voters))], dtype=pl.Binary),
        "row": pl.Series(np.arange(1, len(voters) + 1)), "id": voters["voter_id"]})
    vaults, tables = {}, []
    for name, t in truth.items():
        vaults[name] = pl.DataFrame({
            "handle": pl.Series([rng.bytes(16) for _ in range(len(t))], dtype=pl.Binary),
            "row": t["row"], "id": pl.Series([None] * len(t), dtype=pl.String)})
        linked = (t.join(vaults[name], on="row").filter(pl.col("voter_id").is_not_null())
                  .join(reference.select("handle", voter_id="id"), on="voter_id", suffix="_ref"))
        tables.append(linked.select(partner=pl.lit(name), partner_handle="handle",
                                    reference_handle="handle_ref", rule=pl.lit("email"),
                                    score=pl.lit(1.0)))
    return pl.concat(tables), vaults, reference


def test_perfect_match_scores_one_and_finds_true_overlap() -> None:
    voters = generate_voters(5000, seed=3)
    _, truth = generate_partners(voters, 3, sizes=[600, 400, 300], seed=4, profile="hard")
    matches, vaults, reference = _perfect(truth, voters, np.random.default_rng(0))
    ev = evaluate(matches, truth, vaults, reference)
    assert ev.overall.precision == 1.0 and ev.overall.recall == 1.0 and ev.overall.f1 == 1.0
    assert all(s.recall == 1.0 for s in ev.partners.values())
    for p in ev.pairs:
        assert p.found == p.found_correct == p.truth_registered <= p.truth_all
        assert p.truth_registered > 0
    assert all(w.found == w.truth_registered for w in ev.n_way)


def test_cli_evaluate(tmp_path, capsys) -> None:
    voters = generate_voters(2000, seed=5)
    _, truth = generate_partners(voters, 2, sizes=200, seed=6)
    matches, vaults, reference = _perfect(truth, voters, np.random.default_rng(1))
    for name, t in truth.items():
        write_frame(t, tmp_path / "truth" / f"{name}.parquet")
        write_frame(vaults[name], tmp_path / f"{name}.vault.parquet")
    write_frame(matches, tmp_path / "matches.parquet")
    write_frame(reference, tmp_path / "reference.parquet")
    args = ["evaluate", "--matches", str(tmp_path / "matches.parquet"), "--truth",
            str(tmp_path / "truth"), "--reference-vault", str(tmp_path / "reference.parquet")]
    for name in truth:
        args += ["--vault", f"{name}={tmp_path / f'{name}.vault.parquet'}"]
    with pytest.raises(SystemExit) as done:
        main([*args, "--json"])
    assert done.value.code == 0
    assert json.loads(capsys.readouterr().out)["overall"]["recall"] == 1.0
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 0
    assert "Match quality" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main([*args, "--vault", "nobody=x.parquet"])
    assert done.value.code == 2
