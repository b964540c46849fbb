"""cleanroom.analysis: frames and plots on generated reports, suppressed cells never shown as numbers."""

import json

import polars as pl
import pytest
from matplotlib.figure import Figure

from cleanroom import analysis as ca
from cleanroom import create_identity, hash_file, load_identity, load_spec, new_key
from cleanroom.broker.job import BrokerState, match_job
from cleanroom.errors import InputError
from cleanroom.keys.consortium import Policy, init_consortium
from cleanroom.synth import generate_partners, generate_voters, write_frame

PW = b"pw"
PARTNERS = ["Tenants Union", "Teachers & Staff", "Transit Riders"]  # "&" as in the lists labels
ATTRIBUTES = ("county", "state_house_district", "precinct", "party")


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """One small world, matched twice: with differential privacy (default) and without."""
    root = tmp_path_factory.mktemp("analysis")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("cleanroom.keys.identity.SCRYPT_LOG_N", 10)  # cheap passphrase hashing: not under test here
        return _world(root)


def _world(root):
    voters = generate_voters(3_000, seed=21)
    lists, _ = generate_partners(voters, 3, sizes=400, seed=21, names=PARTNERS)
    ids = {}
    for org in ["Voter File", *PARTNERS, "Broker"]:
        create_identity(org, root / "id" / org, PW)
        ids[org] = load_identity(root / "id" / org, PW)
    key, spec = new_key("analysis", epoch=1), load_spec()
    write_frame(voters, root / "voters.parquet")
    hash_file(root / "voters.parquet", root / "b" / "ref", root / "v" / "ref", key=key, identity=ids["Voter File"],
              spec=spec, reference=True, attributes={a: a for a in ATTRIBUTES}, id_column="voter_id")
    for name, frame in lists.items():
        write_frame(frame, root / f"{name}.csv")
        hash_file(root / f"{name}.csv", root / "b" / name, root / "v" / name, key=key, identity=ids[name], spec=spec)
    out = {}
    for label, budget in [("dp", 5.0), ("exact", None)]:
        consortium = init_consortium("analysis", ids["Voter File"], [ids[p].card for p in PARTNERS],
                                     root / f"{label}.json", epoch=1,
                                     policy=Policy(epsilon_budget=budget, clear_attributes=ATTRIBUTES))
        match_job([root / "b" / "ref"], [root / "b" / p for p in PARTNERS], root / label,
                  state=BrokerState(root / f"state-{label}", ids["Broker"]), consortium=consortium,
                  crosstabs=[["state_house_district", "party"]])
        out[label] = root / label
    return out


def suppress(report, every=3):
    """The same report with more cells and margins suppressed (as a dict, like a service body)."""
    body = report.model_dump(mode="json")
    for table in body["tables"]:
        for i, cell in enumerate(table["cells"]):
            if i % every == 1:
                cell["count"], cell["suppressed"] = None, True
        for i, margin in enumerate(table["margins"]):
            if i % 2 == 0:
                margin["count"], margin["suppressed"] = None, True
    return body


def all_suppressed(report):
    body = suppress(report, every=1)
    for table in body["tables"]:
        for entry in [*table["cells"], *table["margins"]]:
            entry["count"], entry["suppressed"] = None, True
    return body


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]


def test_load_from_folder_file_dict_and_bytes(jobs):
    report = ca.load(jobs["dp"])
    assert ca.load(jobs["dp"] / "report").job_id == report.job_id
    assert ca.load(jobs["dp"] / "report" / "report.json").job_id == report.job_id
    raw = (jobs["dp"] / "report" / "report.json").read_bytes()
    assert ca.load(raw).job_id == ca.load(raw.decode()).job_id == ca.load(json.loads(raw)).job_id == report.job_id
    assert ca.load(report) is report
    with pytest.raises(InputError, match="no report.json"):
        ca.load(jobs["dp"].parent)
    with pytest.raises(InputError, match="no table"):
        ca.table(report, "nope")
    with pytest.raises(InputError, match="no breakdown"):
        ca.breakdown(report, "shoe_size")


def test_frames_keep_suppressed_as_null(jobs):
    for label in ("dp", "exact"):
        report = ca.load(jobs[label])
        for t in report.tables:
            frame = ca.table(report, t.name)
            assert frame.height == len(t.cells)
            assert frame.filter(pl.col("suppressed"))["count"].null_count() == frame["suppressed"].sum()
            assert frame.filter(~pl.col("suppressed"))["count"].null_count() == 0

        rates = ca.match_rates(report)
        assert rates["partner"].to_list() == PARTNERS
        known = rates.drop_nulls("match_rate")
        assert ((known["match_rate"] > 0) & (known["match_rate"] <= 1)).all()

        matrix = ca.overlap_matrix(report)
        assert matrix.columns == ["list", *PARTNERS] and matrix.height == 3
        share = ca.overlap_matrix(report, share=True)
        for i, name in enumerate(PARTNERS):  # the diagonal is 1 unless suppressed
            assert share[name][i] in (1.0, None)

        sets = ca.intersections(report)
        assert sets.height == 7 and sorted(sets["degree"].to_list()) == [1, 1, 1, 2, 2, 2, 3]
        labelled = sets.filter(pl.col("lists") == "Teachers & Staff & Tenants Union")
        assert labelled.height == 1 and labelled["degree"][0] == 2  # an "&" in a name does not split it
        assert labelled["Teachers & Staff"][0] and labelled["Tenants Union"][0] and not labelled["Transit Riders"][0]
        complete = sets.drop_nulls(["registered", "unregistered", "total"])
        assert (complete["registered"] + complete["unregistered"] == complete["total"]).all()

        assert set(ca.attributes(report)) == set(ATTRIBUTES)
        wide = ca.breakdown(report, "county", wide=True)
        assert wide.columns == ["county", *PARTNERS]
        assert "Cells below k=10" in ca.protection_note(report)
        assert ("noise" in ca.protection_note(report, "overlap_sets")) == (label == "dp")


def test_derived_numbers_use_released_values_only(jobs):
    body = ca.load(jobs["exact"]).model_dump(mode="json")
    outcomes = next(t for t in body["tables"] if t["name"] == "partner_outcomes")
    for cell in outcomes["cells"]:  # release everything but one rule of the first partner
        cell["count"] = cell["count"] if cell["count"] is not None else 10
        cell["suppressed"] = False
    first = [c for c in outcomes["cells"] if c["partner"] == PARTNERS[0]]
    first[0]["count"], first[0]["suppressed"] = None, True
    total = sum(c["count"] or 0 for c in first) + 37
    for margin in outcomes["margins"]:
        if margin["level"] == "partner" and margin["partner"] == PARTNERS[0]:
            margin["count"], margin["suppressed"] = total, False
    rates = ca.match_rates(body)
    unmatched = {c["outcome"]: c["count"] for c in first}
    assert rates["matched"][0] == total - unmatched["unmatched"] - unmatched["no_token"]
    unmatched["unmatched"] = None
    next(c for c in first if c["outcome"] == "unmatched").update(count=None, suppressed=True)
    assert ca.match_rates(body)["matched"][0] is None  # not derivable: not guessed


def test_every_plot_renders_and_saves(jobs, tmp_path):
    report = ca.load(jobs["dp"])
    figures = {
        "overlap": ca.plot_overlap(report),
        "overlap_share": ca.plot_overlap(report, share=True),
        "upset": ca.plot_upset(report),
        "upset_degree": ca.plot_upset(report, sort="degree", min_degree=2),
        "precinct": ca.plot_breakdown(report, "precinct", top=5),
        "district": ca.plot_breakdown(report, "state_house_district", partners=PARTNERS[:2]),
        "rules": ca.plot_match_rules(report),
    }
    for name, fig in figures.items():
        assert isinstance(fig, Figure)
        assert "noisy counts" in fig._suptitle.get_text()  # DP is announced in the title...
        assert any("differential-privacy noise" in t for t in texts(fig))  # ...and the footnote
        png = ca.save_figure(fig, tmp_path / f"{name}.png", dpi=50)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = ca.save_figure(figures["upset"], tmp_path / "upset.svg", dpi=50)
    assert b"<svg" in svg.read_bytes()[:500]
    assert figures["rules"]._repr_png_()[:4] == b"\x89PNG"  # shows itself in Jupyter
    with pytest.raises(InputError, match="png"):
        ca.save_figure(figures["upset"], tmp_path / "upset.jpg", dpi=50)
    exact = ca.load(jobs["exact"])
    assert "noisy" not in ca.plot_upset(exact)._suptitle.get_text()


def test_suppressed_cells_are_drawn_as_suppressed_never_as_numbers(jobs, tmp_path):
    report = ca.load(suppress(ca.load(jobs["exact"])))
    pairs = ca.table(report, "overlap_pairs")
    matrix = ca.overlap_matrix(report).drop("list")
    fig = ca.plot_overlap(report)
    labels = texts(fig)
    assert labels.count(ca.SUPPRESSED_LABEL) == sum(matrix.null_count().row(0)) >= pairs["suppressed"].sum() > 0
    shown = {t.replace(",", "") for t in labels if t.replace(",", "").isdigit()}
    assert shown <= {str(v) for v in pairs["count"].drop_nulls()}  # only released numbers
    assert "0" not in shown or 0 in pairs["count"].drop_nulls().to_list()

    county = ca.table(report, "by_county")
    fig = ca.plot_breakdown(report, "county", top=None)
    assert texts(fig).count(" " + ca.SUPPRESSED_LABEL) == county["suppressed"].sum()

    sets = ca.intersections(report)
    fig = ca.plot_upset(report)
    assert texts(fig).count(ca.SUPPRESSED_LABEL) == sets["total"].null_count()
    for other in [fig, ca.plot_match_rules(report), ca.plot_overlap(report, share=True)]:
        ca.save_figure(other, tmp_path / "suppressed.png", dpi=50)

    nothing = ca.load(all_suppressed(ca.load(jobs["exact"])))
    assert ca.match_rates(nothing)["match_rate"].null_count() == len(PARTNERS)
    for fig in [ca.plot_overlap(nothing), ca.plot_upset(nothing), ca.plot_match_rules(nothing),
                ca.plot_breakdown(nothing, "party")]:
        assert ca.SUPPRESSED_LABEL in " ".join(texts(fig))
        ca.save_figure(fig, tmp_path / "nothing.svg", dpi=50)
