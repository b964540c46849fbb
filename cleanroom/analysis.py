"""Notebook helpers: a protected report as polars frames, and plots that keep its protections.

Everything here reads only what the broker released (a `report.json`), so it
can run anywhere a coordinator works: a notebook, a script, a CI job.

```python
from cleanroom import analysis as ca

report = ca.load("jobs/2026-recall")          # job folder, report folder, file, dict or JSON bytes
ca.match_rates(report)                         # polars frames ...
fig = ca.plot_upset(report)                    # ... and matplotlib figures
ca.save_figure(fig, "overlap.png")
```

Rules every function follows:

- A suppressed count is `null` in a frame and drawn hatched, labelled
  "suppressed", in a plot; it is never shown as 0 and never estimated. Figures
  derived from released numbers only (a total minus released parts) are
  computed, because anyone holding the report can compute them too.
- When the report carries differential-privacy noise, every figure says so
  (title and footnote, with the noise scale), and the frames keep the report's
  protections at hand through `protection_note`.
- Figures are built on `matplotlib.figure.Figure` directly, without pyplot,
  so they work headless (scripts, CI) and display in Jupyter when returned
  from a cell.
"""

from __future__ import annotations

import io
import itertools
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from cleanroom.broker.reports import NO_TOKEN, UNMATCHED, Report, ReportTable, load_report, pair_labels
from cleanroom.errors import InputError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "attributes",
    "breakdown",
    "intersections",
    "load",
    "margins",
    "match_rates",
    "match_rules",
    "overlap_matrix",
    "plot_breakdown",
    "plot_match_rules",
    "plot_overlap",
    "plot_upset",
    "protection_note",
    "save_figure",
    "table",
]

SUPPRESSED_LABEL = "suppressed"
_HATCH = {"facecolor": "white", "edgecolor": "0.45", "hatch": "////", "linewidth": 0.6}
_REGISTERED = "#2c6e9b"
_UNREGISTERED = "#9cc3dd"
_UNSPLIT = "#6a9fc2"

ReportSource = Report | Mapping[str, Any] | bytes | str | Path


# ---------------------------------------------------------------- loading


def load(source: ReportSource) -> Report:
    """A validated report from a job folder, report folder, `report.json`, dict, or JSON text/bytes.

    A service response body can be passed as is (bytes or the parsed dict).
    """
    if isinstance(source, Report):
        return source
    if isinstance(source, Mapping):
        return Report.model_validate(dict(source))
    if isinstance(source, bytes | bytearray):
        return Report.model_validate_json(bytes(source))
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return Report.model_validate_json(source)
    path = Path(source)
    if (path / "report" / "report.json").is_file():
        path = path / "report"
    if not (path / "report.json" if path.is_dir() else path).is_file():
        raise InputError(f"no report.json at {path.name!r} (pass a job folder, its report/ folder or the file)")
    return load_report(path)


def _table(report: Report, name: str) -> ReportTable:
    found = next((t for t in report.tables if t.name == name), None)
    if found is None:
        raise InputError(f"the report has no table {name!r}; it has {', '.join(t.name for t in report.tables)}")
    return found


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pl.DataFrame:
    schema = {c: pl.String for c in columns} | {"count": pl.Int64, "suppressed": pl.Boolean}
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def table(report: ReportSource, name: str) -> pl.DataFrame:
    """One released table's cells: its dims, `count` (null = suppressed) and `suppressed`."""
    report = load(report)
    t = _table(report, name)
    return _frame([{c: cell.get(c) for c in [*t.dims, "count", "suppressed"]} for cell in t.cells], t.dims)


def margins(report: ReportSource, name: str, level: str | list[str] = "") -> pl.DataFrame:
    """A table's released margins at one level: the dims kept (`""` is the grand total)."""
    report = load(report)
    t = _table(report, name)
    level = ",".join(level) if isinstance(level, list) else level
    kept = [d for d in level.split(",") if d]
    rows = [{c: m.get(c) for c in [*kept, "count", "suppressed"]} for m in t.margins if m["level"] == level]
    return _frame(rows, kept)


def _margin(report: Report, name: str, level: str) -> dict[str, int | None]:
    """{value of the single kept dim: count or None} for a one-dim margin level."""
    return {m[level]: m["count"] for m in _table(report, name).margins if m["level"] == level}


def protection_note(report: ReportSource, name: str | None = None) -> str:
    """One sentence on how a table (or the whole report) was protected, for captions."""
    report = load(report)
    k = report.policy.get("k")
    text = (
        f"Cells below k={k} are suppressed (hatched); complementary suppression hides some larger cells "
        "so no suppressed value can be worked out."
    )
    protections = _table(report, name).protections if name else {}
    if report.policy.get("dp"):
        scale = protections.get("noise_scale")
        eps = protections.get("epsilon")
        text += (
            " Counts carry differential-privacy noise (discrete Laplace"
            + (f", scale {scale:.3g}, epsilon {eps:.3g} for this table" if scale and eps else "")
            + f"; report epsilon {report.epsilon_charged:g}): they are noisy estimates, not exact."
        )
    return text


def _noisy(report: Report) -> bool:
    return bool(report.policy.get("dp"))


# ---------------------------------------------------------------- frames


def match_rates(report: ReportSource) -> pl.DataFrame:
    """Per partner: rows, matched, unmatched, no_token and match_rate (matched / rows).

    `matched` is the sum of the rule cells when all are released, else rows
    minus unmatched minus no_token when those are released, else null.
    """
    report = load(report)
    cells = table(report, "partner_outcomes")
    rows = _margin(report, "partner_outcomes", "partner")
    out = []
    for partner in report.partners:
        mine = cells.filter(pl.col("partner") == partner)
        value = dict(zip(mine["outcome"], mine["count"], strict=True))
        rules = mine.filter(~pl.col("outcome").is_in([UNMATCHED, NO_TOKEN]))["count"]
        total = rows.get(partner)
        if rules.null_count() == 0:
            matched = int(rules.sum())
        elif None not in (total, value.get(UNMATCHED), value.get(NO_TOKEN)):
            matched = total - value[UNMATCHED] - value[NO_TOKEN]
        else:
            matched = None
        out.append({
            "partner": partner, "rows": total, "matched": matched,
            "unmatched": value.get(UNMATCHED), "no_token": value.get(NO_TOKEN),
        })
    frame = pl.DataFrame(out, schema={"partner": pl.String, "rows": pl.Int64, "matched": pl.Int64,
                                      "unmatched": pl.Int64, "no_token": pl.Int64}, orient="row")
    return frame.with_columns((pl.col("matched") / pl.col("rows")).alias("match_rate"))


def match_rules(report: ReportSource) -> pl.DataFrame:
    """Partner rows by outcome (each match rule in cascade order, unmatched, no_token) and share of rows."""
    report = load(report)
    rows = _margin(report, "partner_outcomes", "partner")
    totals = pl.DataFrame({"partner": list(rows), "rows": list(rows.values())},
                          schema={"partner": pl.String, "rows": pl.Int64})
    return (
        table(report, "partner_outcomes")
        .join(totals, on="partner", how="left", maintain_order="left")
        .with_columns((pl.col("count") / pl.col("rows")).alias("share"))
    )


def overlap_matrix(report: ReportSource, *, share: bool = False) -> pl.DataFrame:
    """Persons on both lists: a `list` column and one column per partner (diagonal: persons on the list).

    With `share=True` each row is divided by its diagonal: the share of list
    A's persons who are also on list B. Null means suppressed.
    """
    report = load(report)
    counts = _pair_counts(report)
    labels = pair_labels(report.partners)
    both = {(a, b): counts[labels[(a, b) if (a, b) in labels else (b, a)]]
            for a in report.partners for b in report.partners}
    rows = [{"list": a, **{b: _share(both[(a, b)], both[(a, a)]) if share else both[(a, b)]
                           for b in report.partners}} for a in report.partners]
    return pl.DataFrame(rows, schema={"list": pl.String, **{
        b: pl.Float64 if share else pl.Int64 for b in report.partners}})


def _pair_counts(report: Report) -> dict[str, int | None]:
    """The overlap_pairs counts by label (a list's own name: persons on it)."""
    return dict(table(report, "overlap_pairs").select("lists", "count").iter_rows())


def _share(count: int | None, size: int | None) -> float | None:
    """count / size; null when either is suppressed, NaN for an empty list."""
    if count is None or size is None:
        return None
    return count / size if size else float("nan")


def _memberships(partners: list[str]) -> dict[str, tuple[str, ...]]:
    """The report's `lists` labels (sorted names joined by " & ") -> the partners in them."""
    ordered = sorted(partners)
    return {" & ".join(c): c for r in range(1, len(ordered) + 1) for c in itertools.combinations(ordered, r)}


def intersections(report: ReportSource) -> pl.DataFrame:
    """Persons by the exact set of lists they are on (the UpSet counts).

    Columns: `lists`, `degree`, one Boolean per partner, `registered`,
    `unregistered` and `total` (persons in that exact set; null where
    suppressed and not derivable from released numbers).
    """
    report = load(report)
    cells = table(report, "overlap_sets")
    totals = _margin(report, "overlap_sets", "lists")
    members = _memberships(report.partners)
    rows = []
    for lists, in_set in members.items():
        mine = cells.filter(pl.col("lists") == lists)
        if mine.height == 0:
            continue
        parts = dict(zip(mine["registration"], mine["count"], strict=True))
        registered, unregistered = parts.get("registered"), parts.get("unregistered")
        total = totals.get(lists)
        if total is None and registered is not None and unregistered is not None:
            total = registered + unregistered
        if total is not None:  # one released part and the total give the other
            registered = total - unregistered if registered is None and unregistered is not None else registered
            unregistered = total - registered if unregistered is None and registered is not None else unregistered
        rows.append({"lists": lists, "degree": len(in_set), **{p: p in in_set for p in report.partners},
                     "registered": registered, "unregistered": unregistered, "total": total})
    schema = {"lists": pl.String, "degree": pl.Int64, **{p: pl.Boolean for p in report.partners},
              "registered": pl.Int64, "unregistered": pl.Int64, "total": pl.Int64}
    return pl.DataFrame(rows, schema=schema, orient="row").sort("degree", maintain_order=True)


def attributes(report: ReportSource) -> list[str]:
    """The voter-file attributes the report breaks matched persons down by (its `by_<attribute>` tables)."""
    report = load(report)
    return [t.name.removeprefix("by_") for t in report.tables if t.name.startswith("by_")]


def breakdown(report: ReportSource, attribute: str, *, wide: bool = False) -> pl.DataFrame:
    """Matched persons by partner and an attribute (county, district, precinct, party...).

    Long (partner, attribute, count, suppressed) or, with `wide=True`, one row
    per attribute value and one count column per partner (null = suppressed).
    """
    report = load(report)
    name = attribute if attribute.startswith(("by_", "crosstab_")) else f"by_{attribute}"
    if not any(t.name == name for t in report.tables):
        raise InputError(f"the report has no breakdown by {attribute!r}; it has {', '.join(attributes(report))}")
    long = table(report, name)
    if not wide:
        return long
    column = _table(report, name).dims[-1]
    return long.pivot(on="partner", index=column, values="count", maintain_order=True)


# ---------------------------------------------------------------- plots


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    class ReportFigure(Figure):
        """A figure that shows itself in Jupyter when returned from a cell, without pyplot."""

        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
            return buffer.getvalue()

    return ReportFigure(figsize=(width, height), layout="constrained")


def _axes(ax: Axes | None, width: float, height: float) -> Axes:
    return ax if ax is not None else _figure(width, height).add_subplot()


def _finish(fig: Figure, report: Report, name: str | None, title: str) -> Figure:
    """Title (saying "noisy" under DP) and a footnote with the protections."""
    fig.suptitle(title + (" (noisy counts)" if _noisy(report) else ""), fontsize=11)
    width_chars = max(60, int(fig.get_figwidth() * 15))
    fig.text(0.0, 0.0, textwrap.fill(protection_note(report, name), width_chars), fontsize=7,
             color="0.3", ha="left", va="top", transform=fig.transFigure)
    return fig


def _fmt(value: float | None, share: bool = False) -> str:
    if value is None:
        return SUPPRESSED_LABEL
    return f"{value:.0%}" if share else f"{int(value):,}"


def _suppressed_bar(
    ax: Axes, position: float, width: float, stub: float, *, horizontal: bool, inverted: bool = False
) -> None:
    """A hatched stub marking a suppressed value (its length means nothing)."""
    if horizontal:
        ax.barh(position, stub, height=width, **_HATCH)
        label = f"{SUPPRESSED_LABEL} " if inverted else f" {SUPPRESSED_LABEL}"
        ax.text(stub, position, label, va="center", ha="right" if inverted else "left", fontsize=6, color="0.35")
    else:
        ax.bar(position, stub, width=width, **_HATCH)
        ax.text(position, stub, SUPPRESSED_LABEL, va="bottom", ha="center", fontsize=6, color="0.35", rotation=90)


def _legend_patch(label: str = "suppressed (value withheld)"):
    from matplotlib.patches import Patch

    return Patch(label=label, **_HATCH)


def plot_overlap(report: ReportSource, *, share: bool = False, ax: Axes | None = None) -> Figure:
    """Heatmap of persons on both lists (or, with `share`, the share of row list's persons on column list)."""
    import numpy as np
    from matplotlib.patches import Rectangle

    report = load(report)
    wide = overlap_matrix(report, share=share)
    names = report.partners
    n = len(names)
    ax = _axes(ax, 1.6 + 1.1 * n, 1.2 + 0.9 * n)
    values = wide.select(names).to_numpy().astype(float)  # nulls become nan
    masked = np.ma.masked_invalid(values)
    image = ax.imshow(masked, cmap="Blues", vmin=0, vmax=1 if share else None)
    ax.figure.colorbar(image, ax=ax, shrink=0.8,
                       label="share of row list" if share else "persons on both lists")
    top = np.nanmax(values) if np.isfinite(values).any() else 1
    for i, j in itertools.product(range(n), range(n)):
        value = values[i, j]
        if np.isnan(value):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, **_HATCH))
            ax.text(j, i, SUPPRESSED_LABEL, ha="center", va="center", fontsize=7, color="0.25",
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
        else:
            ax.text(j, i, _fmt(value, share), ha="center", va="center", fontsize=8,
                    color="white" if value > 0.6 * (1 if share else top) else "black")
    ax.set_xticks(range(n), names, rotation=30, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("also on list")
    ax.set_ylabel("persons on list")
    return _finish(ax.figure, report, "overlap_pairs",
                   "Share of each list also on another list" if share else "List overlap: persons on both lists")


def plot_upset(report: ReportSource, *, sort: str = "size", max_bars: int = 40, min_degree: int = 1) -> Figure:
    """UpSet plot: persons in each exact combination of lists, split registered / unregistered.

    `sort` is "size" (largest first) or "degree" (single lists first). Bars
    for suppressed combinations are hatched stubs; set sizes on the left are
    persons on each list (the overlap table's diagonal).
    """
    if sort not in ("size", "degree"):
        raise InputError('sort is "size" or "degree"')
    report = load(report)
    frame = intersections(report).filter(pl.col("degree") >= min_degree)
    size_key = pl.col("total").fill_null(-1)
    order = [size_key.is_null(), pl.col("degree"), -size_key] if sort == "degree" else [-size_key, pl.col("degree")]
    frame = frame.sort(order).head(max_bars)
    names = report.partners
    counts = _pair_counts(report)
    sizes = {name: counts[name] for name in names}

    n_bars, n_sets = frame.height, len(names)
    fig = _figure(max(6.0, 2.5 + 0.42 * n_bars), 3.6 + 0.32 * n_sets)
    grid = fig.add_gridspec(2, 2, width_ratios=[1.2, max(2.0, 0.42 * n_bars)], height_ratios=[3, 0.35 * n_sets + 0.4])
    bars = fig.add_subplot(grid[0, 1])
    dots = fig.add_subplot(grid[1, 1], sharex=bars)
    setax = fig.add_subplot(grid[1, 0], sharey=dots)

    known = [t for t in frame["total"] if t is not None]
    stub = 0.04 * (max(known) if known else 10)
    any_suppressed = False
    for x, row in enumerate(frame.iter_rows(named=True)):
        total, registered, unregistered = row["total"], row["registered"], row["unregistered"]
        if total is None:
            any_suppressed = True
            _suppressed_bar(bars, x, 0.7, stub, horizontal=False)
            continue
        if registered is not None and unregistered is not None:
            bars.bar(x, registered, width=0.7, color=_REGISTERED)
            bars.bar(x, unregistered, width=0.7, bottom=registered, color=_UNREGISTERED)
        else:
            bars.bar(x, total, width=0.7, color=_UNSPLIT)
        bars.text(x, total, f"{total:,}", ha="center", va="bottom", fontsize=7)
    bars.set_ylabel("persons in exactly\nthese lists")
    bars.spines[["top", "right"]].set_visible(False)
    bars.tick_params(axis="x", bottom=False, labelbottom=False)
    from matplotlib.patches import Patch

    handles = [Patch(color=_REGISTERED, label="registered"), Patch(color=_UNREGISTERED, label="unregistered")]
    if frame.filter(pl.col("total").is_not_null() & (pl.col("registered").is_null())).height:
        handles.append(Patch(color=_UNSPLIT, label="split suppressed"))
    if any_suppressed:
        handles.append(_legend_patch())
    bars.legend(handles=handles, fontsize=7, frameon=False, loc="upper right")

    for x, row in enumerate(frame.iter_rows(named=True)):
        member = [i for i, p in enumerate(names) if row[p]]
        dots.scatter([x] * n_sets, range(n_sets), s=40, color="0.85", zorder=1)
        dots.scatter([x] * len(member), member, s=40, color="0.15", zorder=2)
        if len(member) > 1:
            dots.plot([x, x], [min(member), max(member)], color="0.15", linewidth=1.5, zorder=1)
    dots.set_yticks(range(n_sets), names)
    dots.set_ylim(n_sets - 0.5, -0.5)
    dots.set_xlim(-0.6, max(n_bars, 1) - 0.4)
    dots.tick_params(axis="both", length=0)
    dots.tick_params(axis="x", labelbottom=False)
    dots.tick_params(axis="y", labelleft=False)
    for side in dots.spines.values():
        side.set_visible(False)

    known_sizes = [s for s in sizes.values() if s is not None]
    set_stub = 0.04 * (max(known_sizes) if known_sizes else 10)
    for i, name in enumerate(names):
        size = sizes.get(name)
        if size is None:
            _suppressed_bar(setax, i, 0.6, set_stub, horizontal=True, inverted=True)
        else:
            setax.barh(i, size, height=0.6, color="0.45")
            setax.text(size, i, f"{size:,} ", ha="right", va="center", fontsize=7, color="white")
    setax.invert_xaxis()
    setax.yaxis.tick_right()
    setax.tick_params(axis="y", labelright=True, length=0)
    setax.set_xlabel("persons on list")
    setax.spines[["top", "left"]].set_visible(False)
    return _finish(fig, report, "overlap_sets", "Overlap of the lists: persons by exact combination")


def plot_breakdown(
    report: ReportSource, attribute: str, *, top: int | None = 25, partners: list[str] | None = None
) -> Figure:
    """Matched persons by an attribute (district, precinct, county...), one panel per partner.

    Values are ordered by the released total across partners; `top` keeps the
    largest (None keeps all).
    """
    report = load(report)
    long = breakdown(report, attribute)
    name = attribute if attribute.startswith(("by_", "crosstab_")) else f"by_{attribute}"
    column = _table(report, name).dims[-1]
    names = partners or report.partners
    totals = _margin(report, name, column)
    values = long[column].unique(maintain_order=True).to_list()
    values.sort(key=lambda v: (totals.get(v) is None, -(totals.get(v) or 0), str(v)))
    shown = values[:top] if top else values
    fig = _figure(1.5 + 3.0 * len(names), 1.4 + 0.24 * len(shown))
    axes = fig.subplots(1, len(names), sharex=True, sharey=True, squeeze=False)[0]
    known = long.filter(pl.col("partner").is_in(names) & pl.col(column).is_in(shown))["count"].drop_nulls()
    stub = 0.04 * (known.max() if known.len() else 10)
    any_suppressed = False
    for ax, partner in zip(axes, names, strict=True):
        mine = dict(long.filter(pl.col("partner") == partner).select(column, "count").iter_rows())
        for y, value in enumerate(shown):
            count = mine.get(value)
            if count is None:
                any_suppressed = True
                _suppressed_bar(ax, y, 0.7, stub, horizontal=True)
            else:
                ax.barh(y, count, height=0.7, color=_REGISTERED)
                ax.text(count, y, f" {count:,}", va="center", fontsize=6)
        ax.set_title(partner, fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_xlabel("matched persons")
        ax.margins(x=0.25)
    axes[0].set_yticks(range(len(shown)), [str(v) for v in shown])
    axes[0].set_ylim(len(shown) - 0.5, -0.5)
    axes[0].set_ylabel(column.replace("_", " "))
    if any_suppressed:
        fig.legend(handles=[_legend_patch()], loc="outside lower right", fontsize=7, frameon=False)
    more = f" (largest {len(shown)} of {len(values)})" if len(shown) < len(values) else ""
    return _finish(fig, report, name, f"Matched persons by {column.replace('_', ' ')} per partner{more}")


def plot_match_rules(report: ReportSource, *, ax: Axes | None = None) -> Figure:
    """Share of each partner's rows matched by each rule of the cascade, unmatched, or without a token."""
    import numpy as np

    report = load(report)
    rules = match_rules(report)
    rates = dict(match_rates(report).select("partner", "match_rate").iter_rows())
    outcomes = rules["outcome"].unique(maintain_order=True).to_list()
    names = report.partners
    ax = _axes(ax, 7.5, 1.4 + 0.32 * len(outcomes) * max(1, len(names)) ** 0.5)
    height = 0.8 / len(names)
    colors = [f"C{i}" for i in range(len(names))]
    any_suppressed = False
    for j, partner in enumerate(names):
        mine = dict(rules.filter(pl.col("partner") == partner).select("outcome", "share").iter_rows())
        for i, outcome in enumerate(outcomes):
            y = i - 0.4 + height * (j + 0.5)
            share = mine.get(outcome)
            if share is None or np.isnan(share):
                any_suppressed = True
                _suppressed_bar(ax, y, height, 0.01, horizontal=True)
            else:
                ax.barh(y, share, height=height, color=colors[j])
    ax.set_yticks(range(len(outcomes)), [o.replace("_", " ") for o in outcomes])
    ax.set_ylim(len(outcomes) - 0.5, -0.5)
    ax.xaxis.set_major_formatter("{x:.0%}")
    ax.set_xlabel("share of the partner's rows")
    ax.spines[["top", "right"]].set_visible(False)
    from matplotlib.patches import Patch

    handles = [
        Patch(color=colors[j], label=f"{p} ({_fmt(rates.get(p), share=True)} matched)" if rates.get(p) is not None
              else f"{p} (match rate suppressed)")
        for j, p in enumerate(names)
    ]
    if any_suppressed:
        handles.append(_legend_patch())
    ax.legend(handles=handles, fontsize=7, frameon=False, loc="lower right")
    return _finish(ax.figure, report, "partner_outcomes", "Match rate per rule (first rule that matched each row)")


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 150) -> Path:
    """Write a figure as PNG, SVG or PDF (by the file's suffix), footnote included."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise InputError(f"save figures as .png, .svg or .pdf, not {path.suffix or 'no suffix'!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path

