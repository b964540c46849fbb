"""CSV exports cannot start a spreadsheet formula."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from cleanroom.privacy import neutralize_csv_cell, write_safe_csv

RISKY = ['=HYPERLINK("x")', "+1", "-2+3", "@SUM(A1)", "\tcmd", "\r=1"]
PLAIN = ["Riverside", "a=b", "SD-11", "", None]


def test_risky_cells_get_an_apostrophe() -> None:
    out = neutralize_csv_cell(pl.Series("name", RISKY + PLAIN))
    assert out.name == "name"
    assert out.to_list() == ["'" + v for v in RISKY] + PLAIN


def test_works_as_an_expression() -> None:
    frame = pl.DataFrame({"name": ["=1", "ok"]})
    assert frame.select(neutralize_csv_cell(pl.col("name"))).to_series().to_list() == ["'=1", "ok"]


def test_write_safe_csv_neutralizes_text_and_headers_only(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "=district": ["=cmd()", "SD-11"],
            "party": pl.Series(["+D", "R"], dtype=pl.Categorical),
            "change": [-3, 4],
        }
    )
    path = tmp_path / "report.csv"
    write_safe_csv(frame, path)
    back = pl.read_csv(path)
    assert back.columns == ["'=district", "party", "change"]
    assert back.get_column("'=district").to_list() == ["'=cmd()", "SD-11"]
    assert back.get_column("party").to_list() == ["'+D", "R"]
    assert back.get_column("change").to_list() == [-3, 4]
