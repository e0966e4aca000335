"""The match report: files, figures and the HTML page, from small synthetic matches."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from protomatch.library.schema import PARAMETER_UNITS
from protomatch.matching.summary import summarise
from protomatch.report.data import MatchReportData
from protomatch.report.html import write_match_report, write_report_index

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
UNITS = dict(PARAMETER_UNITS)
#: log10 range of the log parameters, linear range of the others.
RANGES = {
    "Envelope_mass": (-1.0, 1.0),
    "accretion_rate": (-7.0, -4.0),
    "temperature": (10.0, 80.0),
    "mass": (0.05, 2.0),
    "disk_size": (5.0, 400.0),
    "luminosity": (-1.0, 2.0),
    "age": (4.0, 6.0),
}
LOG_PARAMS = frozenset({"Envelope_mass", "accretion_rate", "luminosity", "age"})
FILES = ("matches.csv", "summary.json", "matches.png", "parameters.png", "corner.png", "index.html")


def _blob(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    cx, cy = rng.uniform(10, 22, 2)
    sx, sy = rng.uniform(2, 6, 2)
    image = np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))
    image += 0.02 * rng.random((size, size))
    return (image / image.max()).astype(np.float32)


def _draw(rng: np.random.Generator, n: int, centre: dict[str, float] | None) -> pd.DataFrame:
    columns = {}
    for name, (low, high) in RANGES.items():
        if centre is None:
            value = rng.uniform(low, high, n)
        else:
            middle = np.log10(centre[name]) if name in LOG_PARAMS else centre[name]
            value = middle + 0.08 * (high - low) * rng.standard_normal(n)
        columns[name] = 10**value if name in LOG_PARAMS else value
    return pd.DataFrame(columns)


def make_report_data(
    target_name: str = "obs_L1527.fits",
    with_truth: bool = True,
    warnings: tuple[str, ...] = (),
    n_matches: int = 20,
    n_prior: int = 500,
    seed: int = 1,
) -> MatchReportData:
    """A plausible report: a prior of ``n_prior`` rows and ``n_matches`` close to the truth."""
    rng = np.random.default_rng(seed)
    prior = _draw(rng, n_prior, None)
    truth = {name: float(prior[name].iloc[0]) for name in UNITS}
    params = _draw(rng, n_matches, truth)
    similarity = np.sort(rng.uniform(0.6, 0.99, n_matches))[::-1]
    matches = pd.DataFrame(
        {
            "rank": np.arange(1, n_matches + 1),
            "similarity": similarity,
            "image_id": rng.integers(0, n_prior, n_matches),
            "system": rng.integers(1, 9, n_matches),
            "snapshot": rng.integers(10, 400, n_matches),
            "projection": rng.integers(1, 9, n_matches),
            "source": [f"sink{k}/output_{k:06d}_isink_{k}_data.hdf5" for k in range(n_matches)],
        }
    )
    matches = pd.concat([matches, params], axis=1)
    return MatchReportData(
        target_name=target_name,
        target_image=_blob(rng),
        match_images=np.stack([_blob(rng) for _ in range(min(10, n_matches))]),
        matches=matches,
        summary=_summary(target_name, matches, prior, truth if with_truth else None, warnings),
        param_names=tuple(UNITS),
        units=dict(UNITS),
        log_params=LOG_PARAMS,
        prior=prior,
        truth=truth if with_truth else None,
        warnings=warnings,
        notes=("no physical pixel scale: the observation was centre-cropped and resized",),
    )


def _summary(
    name: str,
    matches: pd.DataFrame,
    prior: pd.DataFrame,
    truth: dict[str, float] | None,
    warnings: tuple[str, ...] = (),
) -> dict:
    """The summary ``protomatch match`` gives the report (matching.summary.summarise)."""
    summary = summarise(matches, prior, tuple(UNITS), UNITS, truth)
    summary.update(target=name, k=len(matches), threshold=None, warnings=list(warnings), notes=[])
    return summary


@pytest.fixture
def report_data() -> MatchReportData:
    return make_report_data(
        warnings=("no good simulated analogue: best similarity 0.41 is below the 1st percentile",)
    )


def _visible(page: str) -> str:
    """The page without its embedded images, so text checks cannot match inside base64."""
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)


def _check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05  # not a blank canvas
    assert (rgb.max(axis=2) - rgb.min(axis=2)).max() > 0.3  # colour (images, histograms)


def test_writes_every_file_with_valid_content(tmp_path: Path, report_data: MatchReportData):
    out = tmp_path / "report" / "target"
    written = write_match_report(out, report_data)
    assert sorted(p.name for p in written) == sorted(FILES)
    for name in FILES:
        assert (out / name).is_file()
    for name in ("matches.png", "parameters.png", "corner.png"):
        _check_png(out / name)
    assert json.loads((out / "summary.json").read_text()) == report_data.summary
    table = pd.read_csv(out / "matches.csv")
    assert list(table.columns) == list(report_data.matches.columns)
    assert len(table) == len(report_data.matches)
    np.testing.assert_allclose(table["similarity"], report_data.matches["similarity"])
    assert not list(out.glob(".*.tmp"))  # no temporaries left behind

    raw = (out / "index.html").read_text()
    assert raw.count("data:image/png;base64,") == 3
    page = _visible(raw)
    assert report_data.target_name in page
    for name in report_data.param_names:
        assert name in page
    assert "no good simulated analogue" in page
    assert "class='warnings'" in page
    assert "href='matches.csv'" in page and "href='summary.json'" in page
    assert "<th rowspan='2'>truth</th>" in page
    assert f"<td>{report_data.matches['similarity'].iloc[0]:.3f}</td>" in page
    assert page.index("class='warnings'") < page.index("<figure>")  # warnings come first


def test_hostile_name_is_escaped_and_no_warning_box_without_warnings(tmp_path: Path):
    data = make_report_data(target_name="<script>x</script>.fits", with_truth=False)
    write_match_report(tmp_path, data)
    page = _visible((tmp_path / "index.html").read_text())
    assert "<script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;.fits" in page
    assert "class='warnings'" not in page
    assert "<th rowspan='2'>truth</th>" not in page  # no truth column without a truth


def test_degenerate_and_non_positive_parameters_do_not_crash(tmp_path: Path):
    data = make_report_data(with_truth=True, n_matches=6)
    matches = data.matches.copy()
    matches["temperature"] = 42.0  # every match identical: zero-width axis
    matches["age"] = 3.0e5  # identical on a log axis
    prior = data.prior.copy()
    prior.loc[:9, "luminosity"] = 0.0  # log parameter with zeros and negatives in the prior
    prior.loc[10:14, "luminosity"] = -1.0
    matches.loc[0, "luminosity"] = 0.0
    prior["accretion_rate"] = -1.0  # nothing positive at all in the prior
    matches["accretion_rate"] = 0.0
    summary = _summary(data.target_name, matches, prior, data.truth)
    data = dataclasses.replace(data, matches=matches, prior=prior, summary=summary)
    written = write_match_report(tmp_path, data)
    for path in written:
        if path.suffix == ".png":
            _check_png(path)
    page = _visible((tmp_path / "index.html").read_text())
    start = page.index("Parameter summary")
    table = page[start : page.index("</table>", start)]
    assert "<td>42</td>" in table  # the summary's median of identical matches


def test_no_matches_gives_a_report(tmp_path: Path):
    data = make_report_data(n_matches=3, n_prior=50, with_truth=False)
    empty = data.matches.iloc[:0]
    data = dataclasses.replace(data, matches=empty, match_images=data.match_images[:0])
    written = write_match_report(tmp_path, data)
    assert len(written) == len(FILES)
    assert pd.read_csv(tmp_path / "matches.csv").empty
    assert (tmp_path / "corner.png").read_bytes()[:8] == PNG_SIGNATURE


def test_report_index_links_and_embeds_each_target(tmp_path: Path):
    data = make_report_data(n_matches=4, n_prior=50)
    write_match_report(tmp_path / "a", data)
    entries = [
        ("first <target>", Path("a"), {**data.summary, "warnings": ["w1", "w2"]}),
        ("missing", tmp_path / "b c", {"best_similarity": 0.5}),
    ]
    path = write_report_index(tmp_path, entries)
    raw = path.read_text()
    assert path == tmp_path / "index.html"
    assert raw.count("data:image/png;base64,") == 1  # only the existing report has a thumbnail
    page = _visible(raw)
    assert "href='a/index.html'" in page and "href='b%20c/index.html'" in page
    assert "first &lt;target&gt;" in page
    assert "⚠ 2" in page


def test_mismatched_inputs_are_refused():
    data = make_report_data(n_matches=3, n_prior=20)
    with pytest.raises(ValueError, match="lacks parameter columns"):
        dataclasses.replace(data, prior=data.prior.drop(columns=["mass"]))
    with pytest.raises(ValueError, match="2-D"):
        dataclasses.replace(data, target_image=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="summary lacks the statistics"):
        dataclasses.replace(data, summary={"parameters": {}})


def test_report_quotes_the_summary_statistics(tmp_path: Path):
    """The page shows the summary's numbers, not statistics of its own."""
    data = make_report_data(n_matches=8, n_prior=60)
    parameters = {name: dict(stats) for name, stats in data.summary["parameters"].items()}
    parameters["temperature"] = {
        **parameters["temperature"],
        "matches": {"median": 12.5, "q16": 11.0, "q84": 14.0, "q2.5": 10.0, "q97.5": 15.0},
    }
    write_match_report(tmp_path, dataclasses.replace(data, summary={"parameters": parameters}))
    page = _visible((tmp_path / "index.html").read_text())
    start = page.index("<b>temperature</b>")
    row = page[start : page.index("</tr>", start)]
    assert "<td>12.5</td>" in row and "[11, 14]" in row and "[10, 15]" in row


def test_noisy_target_is_shown_above_its_noise():
    from protomatch.report.data import STRETCH_FLOOR
    from protomatch.report.figures import render_figures
    from protomatch.report.images import _log_stretch

    assert STRETCH_FLOOR == 1e-4  # four decades below the peak by default

    image = np.array([[1.0, 0.1, 1e-3], [1e-5, 0.0, -0.2]])
    np.testing.assert_allclose(_log_stretch(image, 0.01), [[0, -1, -2], [-2, -2, -2]])
    data = make_report_data(n_matches=5, n_prior=40)
    plain = render_figures(data)["matches.png"]
    noisy = render_figures(
        dataclasses.replace(data, display_floor=0.02, matches_seen_through="the beam")
    )["matches.png"]
    assert noisy != plain
    with pytest.raises(ValueError, match="display_floor"):
        dataclasses.replace(data, display_floor=0.0)


# --------------------------------------------------------------------------- what was compared


def _page_of(tmp_path: Path, data: MatchReportData) -> str:
    write_match_report(tmp_path, data)
    return _visible((tmp_path / "index.html").read_text())


def _with_summary(data: MatchReportData, **extra) -> MatchReportData:
    return dataclasses.replace(data, summary={**data.summary, **extra})


COMPARED = {
    "distance_pc": 140.0,
    "distance_from": "header DISTANCE",
    "pixel_scale_arcsec": 0.02,
    "observation_au_per_pixel": 2.8,
    "library_au_per_pixel": 4.0,
    "field_au": 128.0,
    "beam_arcsec": [0.1, 0.07, 30.0],
    "beam_au": [14.0, 9.8],
    "noise_rms": 0.05,
    "noise_unit": "mJy/beam",
    "peak_snr": 120.0,
    "intensity_unit": "Jy/beam",
    "unscaled": False,
    "missing": [],
}


def test_observation_figure_is_written_and_embedded(tmp_path: Path):
    from protomatch.report.data import ObservedView

    image = make_report_data(n_matches=3, n_prior=30).target_image.copy()
    image[0, 0] = np.nan
    observed = ObservedView(
        image=image,
        au_per_pixel=3.0,
        beam_arcsec=(0.2, 0.1, 45.0),
        pixel_scale_arcsec=0.02,
        field_box=(16.0, 16.0, 20.0),
    )
    data = dataclasses.replace(make_report_data(n_matches=5, n_prior=40), observed=observed)
    written = write_match_report(tmp_path, data)
    assert tmp_path / "observation.png" in written
    _check_png(tmp_path / "observation.png")
    raw = (tmp_path / "index.html").read_text()
    assert raw.count("data:image/png;base64,") == 4
    page = _visible(raw)
    assert "What was compared" in page
    assert page.index("alt='observation.png'") < page.index("alt='matches.png'")


def test_what_was_compared_lists_the_facts(tmp_path: Path):
    page = _page_of(tmp_path, _with_summary(make_report_data(n_matches=4), compared=COMPARED))
    assert "What was compared" in page
    for text in (
        "140 pc (header DISTANCE)",
        "0.02″ per pixel",
        "128 AU square",
        "0.1″ × 0.07″, PA 30° = 14 × 9.8 AU",
        "0.05 mJy/beam",
    ):
        assert text in page
    assert "class='unscaled'" not in page


def test_unknown_facts_and_hostile_text_do_not_break_the_page(tmp_path: Path):
    compared = {key: None for key in COMPARED}
    compared.update(distance_from="<b>", missing=["the <distance>"], beam_arcsec=[1.0])
    provenance = {"model": {"path": "<script>m</script>", "fingerprint": None}, "index": "<i>"}
    data = _with_summary(make_report_data(n_matches=4), compared=compared, provenance=provenance)
    page = _page_of(tmp_path, data)
    start = page.index("What was compared")
    assert page[start : page.index("</table>", start)].count("unknown") >= 8
    assert "the &lt;distance&gt;" in page
    assert "<script>" not in page and "&lt;script&gt;m&lt;/script&gt;" in page
    assert "<b>fingerprint</b>: –" in page and "&lt;i&gt;" in page


def test_unscaled_match_has_a_banner_at_the_top(tmp_path: Path):
    compared = {**COMPARED, "unscaled": True, "missing": ["the distance", "the beam"]}
    data = make_report_data(
        n_matches=4, warnings=("no good simulated analogue: best similarity 0.41",)
    )
    page = _page_of(tmp_path, _with_summary(data, compared=compared))
    banner = page.index("class='unscaled'")
    assert banner < page.index("<h1>") < page.index("class='warnings'")
    text = page[banner : page.index("</div>", banner)]
    assert "Matched without physical scale (--unscaled)" in text
    assert "the distance; the beam" in text


def test_a_parameter_the_image_leaves_at_the_prior_says_so(tmp_path: Path):
    data = make_report_data(n_matches=300, n_prior=300)
    matches = data.matches.copy()
    matches["temperature"] = data.prior["temperature"].to_numpy()  # the matches are the prior
    matches["similarity"] = 0.9
    summary = _summary(data.target_name, matches, data.prior, data.truth)
    assert summary["parameters"]["temperature"]["constraint"]["constrained"] is False
    assert summary["parameters"]["age"]["constraint"]["constrained"] is True
    data = dataclasses.replace(data, matches=matches, summary=summary)
    page = _page_of(tmp_path, data)
    row_of = {}
    for name in ("temperature", "age"):
        start = page.index(f"<b>{name}</b>")
        row_of[name] = page[start : page.index("</tr>", start)]
    assert "not constrained by this image: this is the prior" in row_of["temperature"]
    assert "not constrained" not in row_of["age"] and "constrained: 68% width" in row_of["age"]


def test_meta_line_names_how_the_matches_were_chosen():
    from protomatch.report.html import _meta_line

    data = make_report_data(n_matches=20)
    meta = _meta_line(data)
    assert "k = <b>20</b>" in meta and "threshold" not in meta and "none" not in meta
    systems = data.matches["system"].nunique()
    assert f"<b>{systems}</b> distinct systems among the 20 matches" in meta

    meta = _meta_line(_with_summary(data, k=None, threshold=0.9))
    assert "similarity ≥ <b>0.9</b>" in meta and "k =" not in meta
    assert "1</b> distinct system among" in _meta_line(_with_summary(data, distinct_systems=1))


def test_residual_is_the_difference_of_peak_normalised_images():
    from protomatch.report.images import residual

    target = np.array([[2.0, 0.0], [np.nan, 1.0]])
    match = np.array([[4.0, 4.0], [0.0, 2.0]])
    np.testing.assert_allclose(residual(target, match), [[0.0, -1.0], [0.0, 0.0]])


def test_corner_plot_is_drawn_by_corner_over_the_prior():
    from protomatch.report.figures import _corner_figure

    data = make_report_data(n_matches=40, n_prior=200)
    fig = _corner_figure(data)
    n = len(data.param_names)
    assert len(fig.axes) == n * n
    assert fig.axes[n].get_ylabel().startswith("log₁₀ accretion_rate")  # row 1, column 0
    assert fig.axes[n * n - 1].get_xlabel() == "log₁₀ age\n[yr]"


def test_corner_plot_of_a_single_parameter_and_a_single_match():
    from protomatch.report.figures import render_figures

    data = make_report_data(n_matches=1, n_prior=10)
    figures = render_figures(dataclasses.replace(data, param_names=("mass",)))
    assert figures["corner.png"][:8] == PNG_SIGNATURE


def _renamed(data: MatchReportData, old: str, new: str, unit: str) -> MatchReportData:
    """The report with parameter ``old`` renamed ``new`` (in unit ``unit``) everywhere."""
    names = tuple(new if name == old else name for name in data.param_names)
    units = {(new if name == old else name): u for name, u in data.units.items()} | {new: unit}
    matches = data.matches.rename(columns={old: new})
    prior = data.prior.rename(columns={old: new})
    truth = {(new if name == old else name): v for name, v in (data.truth or {}).items()}
    summary = summarise(matches, prior, names, units, truth)
    summary.update(target=data.target_name, k=len(matches), threshold=None, warnings=[])
    return dataclasses.replace(
        data, param_names=names, units=units, matches=matches, prior=prior, truth=truth,
        summary=summary, log_params=frozenset({new} | set(data.log_params)),
    )  # fmt: skip


def test_dollars_and_undecodable_bytes_in_names_are_drawn_as_text(tmp_path: Path):
    data = make_report_data(target_name="obs_$x^$_\udcff\x1b.fits", n_matches=8, n_prior=80)
    data = _renamed(data, "mass", "ma$s^$s", "M$_\\odot")
    written = write_match_report(tmp_path, data)
    for path in written:
        if path.suffix == ".png":
            _check_png(path)
    page = _visible((tmp_path / "index.html").read_text(encoding="utf-8"))
    assert "obs_$x^$_\\xff\\x1b.fits" in page and "ma$s^$s" in page
    assert "ma$s^$s" in (tmp_path / "matches.csv").read_text().splitlines()[0]


def test_matches_csv_cells_never_become_spreadsheet_formulas(tmp_path: Path):
    data = make_report_data(n_matches=4, n_prior=50)
    matches = data.matches.copy()
    matches["system"] = ['=HYPERLINK("http://x")', "+1", "-cmd", "@SUM(A1)"]
    matches["source"] = ["\tq.fits", "\rr.fits", "ok.fits", "-2"]
    matches["temperature"] = [-5.0, -0.5, 3.0, 4.0]
    write_match_report(tmp_path, dataclasses.replace(data, matches=matches))
    table = pd.read_csv(tmp_path / "matches.csv")
    assert list(table["system"]) == ['\'=HYPERLINK("http://x")', "'+1", "'-cmd", "'@SUM(A1)"]
    assert list(table["source"]) == ["'\\x09q.fits", "'\\x0dr.fits", "ok.fits", "'-2"]
    assert table["temperature"].tolist() == [-5.0, -0.5, 3.0, 4.0]  # numbers stay numbers
    assert table["rank"].tolist() == [1, 2, 3, 4]
