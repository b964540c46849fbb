"""Reading partner input files (CSV or Parquet) as lazy frames of strings.

Errors name the file, a line number or a column, never a value.
"""

from __future__ import annotations

import codecs
from pathlib import Path

import polars as pl

from cleanroom.errors import InputError

ROW = "__row"
_DELIMITERS = (",", ";", "\t", "|")


def read_input(
    path: Path, *, encoding: str = "utf-8", delimiter: str | None = None
) -> pl.LazyFrame:
    """Lazy frame of the input with a 1-based data row number in column `__row`.

    CSV: all columns are read as strings; a UTF-8 BOM is accepted; the delimiter
    is sniffed from the header unless given; other encodings are decoded in
    memory first.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file {path.name} not found")
    if path.stat().st_size == 0:
        raise InputError(f"input file {path.name} is empty")
    if is_parquet(path):
        try:
            lf = pl.scan_parquet(path)
            lf.collect_schema()
        except Exception:  # noqa: BLE001 - polars raises several types for bad files
            raise InputError(f"input file {path.name} is not a readable parquet file") from None
    else:
        lf = _scan_csv(path, encoding, delimiter)
    return lf.with_row_index(ROW, offset=1)


def is_parquet(path: Path) -> bool:
    """Parquet by its suffix (anything else is read as CSV)."""
    return path.suffix.lower() in (".parquet", ".pq")


def _scan_csv(path: Path, encoding: str, delimiter: str | None) -> pl.LazyFrame:
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r}") from None
    if codec == "utf-8":
        _check_utf8(path)
        source: Path | bytes = path
        with open(path, "rb") as f:
            header = f.readline().decode("utf-8-sig")
    else:
        try:
            text = path.read_bytes().decode(codec)
        except UnicodeDecodeError as exc:
            raise InputError(f"{path.name} is not valid {codec} (byte {exc.start})") from None
        source = text.encode("utf-8")
        header = text.split("\n", 1)[0]
    if delimiter is None:
        delimiter = max(_DELIMITERS, key=header.count)
    lf = pl.scan_csv(
        source, separator=delimiter, infer_schema=False, encoding="utf8", raise_if_empty=False
    )
    try:
        names = lf.collect_schema().names()
    except Exception:  # noqa: BLE001
        raise InputError(f"input file {path.name} is not a readable CSV file") from None
    if not names:
        raise InputError(f"input file {path.name} has no header row")
    return lf


def _check_utf8(path: Path) -> None:
    """Fail naming the first line that is not UTF-8 (streamed, constant memory)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                line += block[: max(exc.start, 0)].count(b"\n")
                raise InputError(
                    f"{path.name}: line {line} is not valid UTF-8; pass --encoding "
                    "with the file's encoding (e.g. latin-1 or cp1252)"
                ) from None
            line += block.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InputError(f"{path.name}: the file ends inside a UTF-8 character") from None
