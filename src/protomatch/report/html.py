"""The match report: figures, tables and a self-contained HTML page for one observation.

``write_match_report`` turns what the search found for one target (its best matches, their
similarities and physical parameters θ, and the summary statistics of
:func:`protomatch.matching.summary.summarise`) into a folder a person can read first:
``matches.png`` (the target beside its best matches and the residual of the best),
``parameters.png`` (each parameter's match distribution over the library prior),
``corner.png`` (pairs of parameters among the matches over the prior), ``observation.png``
(the observation as read, when given), ``matches.csv``, ``summary.json`` and an
``index.html`` that embeds the figures so it works when moved alone. The page says what was
compared (``summary["compared"]``), where the model, index and library came from
(``summary["provenance"]``) and, per parameter, whether the image constrains it at all.
Figures are drawn on Agg canvases without pyplot, so no global backend or figure registry is
touched. What the report shows is a
:class:`protomatch.report.data.MatchReportData`.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import logging
import os
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from protomatch._artefact import write_bytes_atomic, write_json_atomic
from protomatch._text import csv_bytes, safe_name
from protomatch.report.data import (
    MatchReportData,
    calibration_phrase,
    cell_text,
    plain_number,
    verdict_phrase,
)
from protomatch.report.figures import parameter_stats, render_figures

__all__ = ["write_match_report", "write_report_index"]

log = logging.getLogger(__name__)

_TOP_ROWS = 20


# --------------------------------------------------------------------------- text
def _num(value: Any) -> str:
    """HTML for a number: three significant figures, scientific as m×10<sup>e</sup>."""
    text = plain_number(value)
    scientific = re.fullmatch(r"(-?[0-9.]+)e(-?[0-9]+)", text)
    if scientific is None:
        return html.escape(text)
    return f"{scientific[1]}×10<sup>{int(scientific[2])}</sup>"


def _interval(stats: Mapping[str, Any], low: str, high: str) -> str:
    return f"[{_num(stats.get(low))}, {_num(stats.get(high))}]"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;
 background:#f5f6f8;color:#1d2430;line-height:1.45}
main{max-width:1200px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:1.6em;margin:0 0 4px;word-break:break-all}h2{font-size:1.2em;margin:32px 0 10px;
 border-bottom:2px solid #dfe3ea;padding-bottom:4px}
.meta{color:#555f6d;margin:0 0 18px}.meta b{color:#1d2430}
.warnings{background:#fff1f0;border:2px solid #d1495b;border-left-width:8px;border-radius:6px;
 padding:10px 16px;margin:16px 0}.warnings h2{border:0;color:#a4161a;margin:4px 0}
.notes{background:#eef4fb;border-left:6px solid #1b6ca8;border-radius:6px;padding:8px 16px}
ul{margin:6px 0;padding-left:22px}
figure{background:#fff;border:1px solid #dfe3ea;border-radius:6px;margin:12px 0;padding:10px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:#555f6d;font-size:.9em;margin-top:6px}
table{border-collapse:collapse;background:#fff;font-size:.9em;margin:8px 0}
th,td{border:1px solid #dfe3ea;padding:4px 9px;text-align:right;white-space:nowrap}
th{background:#e9edf3}td.name,th.name{text-align:left}tr:nth-child(even) td{background:#fafbfc}
.scroll{overflow-x:auto}a{color:#1b6ca8}.thumb{width:420px;max-width:100%;border:1px solid #ccc}
.unscaled{background:#fff4d6;border:3px solid #e09f3e;border-radius:6px;padding:12px 18px;
 margin:0 0 16px;font-size:1.05em}
td.prior{color:#8a919c}td.verdict{text-align:left;white-space:normal;max-width:340px}
table.facts td{text-align:left;white-space:normal}
"""


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>\n{body}\n</main></body></html>\n"
    )


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _message_list(items: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(str(item))}</li>" for item in items) + "</ul>"


#: Text of a parameter the matches do not constrain (summary ``constraint``).
NOT_CONSTRAINED = "not constrained by this image: this is the prior"


def _verdict(constraint: Mapping[str, Any] | None) -> tuple[str, bool]:
    """HTML of a parameter's constraint cell, and whether the image leaves it at the prior."""
    if not constraint or constraint.get("constrained") is None:
        return "–", False
    ratio, shift = constraint.get("width_ratio"), constraint.get("shift")
    scale = " (log10)" if constraint.get("scale") == "log10" else ""
    numbers = (
        f"68% width {_num(ratio)}× the prior's, median shifted {_num(shift)} prior "
        f"half-widths{html.escape(scale)}"
    )
    if constraint["constrained"]:
        return f"constrained: {numbers}", False
    return f"<b>{html.escape(NOT_CONSTRAINED)}</b><br><small>{numbers}</small>", True


def _summary_table(data: MatchReportData) -> str:
    stats = {name: parameter_stats(data, name) for name in data.param_names}
    validation = data.summary.get("validation")
    has_truth = any(s["truth"] is not None for s in stats.values())
    head = (
        "<tr><th class='name' rowspan='2'>parameter</th><th class='name' rowspan='2'>unit</th>"
        + ("<th rowspan='2'>truth</th>" if has_truth else "")
        + "<th colspan='3'>matches (weighted)</th><th colspan='3'>library prior</th>"
        + "<th class='name' rowspan='2'>what the image says</th></tr><tr>"
        + "<th>median</th><th>68% interval</th><th>95% interval</th>" * 2
        + "</tr>"
    )
    rows = []
    for name, s in stats.items():
        verdict, at_prior = _verdict(s["constraint"])
        css = " class='prior'" if at_prior else ""
        cells = [
            f"<td class='name'><b>{html.escape(name)}</b></td>",
            f"<td class='name'>{html.escape(str(s['unit']))}</td>",
        ]
        if has_truth:
            cells.append(f"<td>{_num(s['truth'])}</td>")
        for key in ("matches", "prior"):
            cells += [
                f"<td{css}>{_num(s[key].get('median'))}</td>",
                f"<td{css}>{_interval(s[key], 'q16', 'q84')}</td>",
                f"<td{css}>{_interval(s[key], 'q2.5', 'q97.5')}</td>",
            ]
        cells.append(f"<td class='verdict'>{verdict}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    table = f"<div class='scroll'><table>{head}{''.join(rows)}</table></div>"
    phrase = calibration_phrase(data.summary.get("calibration"))
    calibrated = f"<p class='meta'>{html.escape(phrase[:1].upper() + phrase[1:])}.</p>"
    return table + calibrated + _validation_table(data.param_names, validation)


def _validation_table(names: Sequence[str], validation: Mapping[str, Any] | None) -> str:
    """Per parameter, whether protomatch beat the strongest baseline on mock observations."""
    if validation and validation.get("not_applicable"):
        reason = html.escape(str(validation["not_applicable"]))
        return f"<p class='meta'><b>No verdict for this target</b>: {reason}.</p>"
    if not validation:
        return (
            "<p class='meta'><b>Not validated</b>: whether these estimates beat the strongest "
            "simple baseline is unknown. Run <code>protomatch evaluate MODEL STORE "
            "--observations OBS -o EVAL</code> and match with <code>--evaluation EVAL</code>."
            "</p>"
        )
    rows = []
    for name in names:
        entry = validation["parameters"].get(name)
        text = "–" if entry is None else verdict_phrase(entry, validation["observations"])
        beaten = entry is not None and entry.get("verdict") == "better"
        cell = html.escape(text) if beaten else f"<b>{html.escape(text)}</b>"
        rows.append(
            f"<tr><td class='name'>{html.escape(name)}</td><td class='verdict'>{cell}</td></tr>"
        )
    source = (
        f"From {html.escape(str(validation['folder']))}: "
        f"{html.escape(str(validation['observations']))} mock observations in "
        f"{html.escape(str(validation.get('observations_path', '?')))}; "
        f"{html.escape(str(validation.get('rule', '')))}. It holds for observations like "
        "those, not for every observation; where protomatch does not beat the baseline "
        "(bold), a simple pixel search does as well or better on that parameter."
    )
    return (
        "<h3>Validated on mock observations: protomatch against the strongest simple "
        "baseline</h3><div class='scroll'><table class='facts'><tr><th class='name'>parameter"
        "</th><th class='name'>verdict</th></tr>"
        f"{''.join(rows)}</table></div><p class='meta'>{source}</p>"
    )


def _matches_table(matches: pd.DataFrame) -> str:
    top = matches.head(_TOP_ROWS)
    text_columns = {c for c in top.columns if not pd.api.types.is_numeric_dtype(top[c])}
    head = "".join(
        f"<th{' class=name' if c in text_columns else ''}>{html.escape(str(c))}</th>"
        for c in top.columns
    )
    columns = []
    for column in top.columns:
        css = " class=name" if column in text_columns else ""
        if column == "similarity":
            texts = [f"{v:.3f}" if np.isfinite(v) else "–" for v in top[column].astype(float)]
        else:
            texts = [cell_text(v) for v in top[column].tolist()]
        columns.append([f"<td{css}>{html.escape(t)}</td>" for t in texts])
    rows = ["<tr>" + "".join(cells) + "</tr>" for cells in zip(*columns)]
    more = (
        f"<p>Showing {len(top)} of {len(matches)} matches.</p>" if len(matches) > len(top) else ""
    )
    return f"<div class='scroll'><table><tr>{head}</tr>{''.join(rows)}</table></div>{more}"


def _meta_line(data: MatchReportData) -> str:
    """How many matches, how they were chosen (top k or a similarity threshold), the best."""
    summary = data.summary
    n = len(data.matches)
    k, threshold = summary.get("k"), summary.get("threshold")
    meta = [f"<b>{n}</b> matches"]
    if threshold is not None:
        meta.append(f"similarity ≥ <b>{_num(threshold)}</b>")
    elif k is not None:
        meta.append(f"k = <b>{html.escape(str(k))}</b>")
    meta.append(f"best similarity = <b>{_num(summary.get('best_similarity'))}</b>")
    systems = summary.get("distinct_systems")
    if systems is not None:
        plural = "" if systems == 1 else "s"
        meta.append(
            f"<b>{html.escape(str(systems))}</b> distinct system{plural} among the {n} matches"
        )
    return f"<p class='meta'>{' · '.join(meta)}</p>"


def _unscaled_banner(compared: Mapping[str, Any]) -> str:
    """The banner of a match made without physical scale ("" when it had one)."""
    if not compared.get("unscaled"):
        return ""
    missing = [str(m) for m in compared.get("missing") or []]
    lacking = f"missing {'; '.join(missing)}. " if missing else ""
    return (
        "<div class='unscaled'><b>⚠ Matched without physical scale (--unscaled):</b> "
        f"{html.escape(lacking)}The comparison went ahead without it, so the field, the beam "
        "or the brightness may not be on the library's scale, and the matches and their "
        "parameters say less than a physically scaled match would.</div>"
    )


def _numbers(value: Any, n: int) -> list[Any] | None:
    """The first ``n`` items of a list or tuple, or None if ``value`` has fewer."""
    if isinstance(value, (list, tuple)) and len(value) >= n:
        return list(value[:n])
    return None


def _compared_rows(compared: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """(label, HTML or None when unknown) of each fact of what was compared."""
    get = compared.get
    distance = get("distance_pc")
    where = f" ({html.escape(str(get('distance_from')))})" if get("distance_from") else ""
    beam, beam_au = _numbers(get("beam_arcsec"), 3), _numbers(get("beam_au"), 2)
    beam_text = None
    if beam is not None:
        beam_text = f"{_num(beam[0])}″ × {_num(beam[1])}″, PA {_num(beam[2])}°"
        if beam_au is not None:
            beam_text += f" = {_num(beam_au[0])} × {_num(beam_au[1])} AU"
    noise, unit = get("noise_rms"), get("noise_unit") or get("intensity_unit") or ""
    missing = [str(m) for m in get("missing") or []]
    known = {
        "distance": None if distance is None else f"{_num(distance)} pc{where}",
        "pixel scale": _unit(get("pixel_scale_arcsec"), "″ per pixel"),
        "observation pixel": _unit(get("observation_au_per_pixel"), " AU"),
        "library pixel": _unit(get("library_au_per_pixel"), " AU"),
        "field compared": _unit(get("field_au"), " AU square"),
        "beam": beam_text,
        "noise rms": None if noise is None else f"{_num(noise)} {html.escape(str(unit))}",
        "peak S/N": _unit(get("peak_snr"), ""),
        "intensity unit": None
        if get("intensity_unit") is None
        else html.escape(str(get("intensity_unit"))),
    }
    rows = list(known.items())
    if missing:
        rows.append(("missing", html.escape("; ".join(missing))))
    return rows


def _unit(value: Any, unit: str) -> str | None:
    return None if value is None else f"{_num(value)}{html.escape(unit)}"


def _facts_table(rows: Sequence[tuple[str, str | None]]) -> str:
    cells = "".join(
        f"<tr><th class='name'>{html.escape(label)}</th><td>{value or 'unknown'}</td></tr>"
        for label, value in rows
    )
    return f"<table class='facts'>{cells}</table>"


def _plain(value: Any, depth: int = 0) -> str:
    """Escaped HTML of a value; mappings as nested ``key: value`` lists (three levels)."""
    if isinstance(value, Mapping) and depth < 3:
        items = "".join(
            f"<li><b>{html.escape(str(k))}</b>: {_plain(v, depth + 1)}</li>"
            for k, v in value.items()
        )
        return f"<ul>{items}</ul>"
    return html.escape("–" if value is None else str(value))


def _provenance(provenance: Any) -> str:
    if not isinstance(provenance, Mapping) or not provenance:
        return ""
    rows = [(str(key), _plain(value)) for key, value in provenance.items()]
    return "<h2>Provenance</h2>" + _facts_table(rows)


_CAPTIONS = {
    "observation.png": "The observation as read, on its own pixels, log stretch above the "
    "same display floor. Ellipse: the beam; bar: physical scale; dashed square: the field "
    "that was cut out, resampled to the library's pixels and compared.",
    "matches.png": "The target (framed, as compared: on the library's grid) beside its best "
    "matches in rank order, all at the same log stretch relative to each image's peak; s is "
    "the predicted similarity. Below the target: target − best match, each over its peak.",
    "parameters.png": "Each parameter among the matches (weighted by similarity) over the "
    "whole library (grey). Line: weighted median; band: 16–84%; dashed: truth.",
    "corner.png": "Pairs of parameters among the matches (red, weighted by similarity) over "
    "the whole library (grey); diagonal: 1-D distributions.",
}


def _figure(figures: Mapping[str, bytes], name: str, extra: str = "") -> str:
    if name not in figures:
        return ""
    return (
        f"<figure><img src='{_data_uri(figures[name])}' alt='{html.escape(name)}'>"
        f"<figcaption>{html.escape(_CAPTIONS[name] + extra)}</figcaption></figure>"
    )


def _compared_section(data: MatchReportData, figures: Mapping[str, bytes]) -> str:
    compared = data.summary.get("compared")
    table = _facts_table(_compared_rows(compared)) if isinstance(compared, Mapping) else ""
    shown = _figure(figures, "observation.png")
    return f"<h2>What was compared</h2>{table}{shown}" if table or shown else ""


def _report_html(data: MatchReportData, figures: Mapping[str, bytes]) -> str:
    summary = data.summary
    warnings = list(data.warnings) + [
        w for w in summary.get("warnings") or [] if w not in data.warnings
    ]
    notes = list(data.notes) + [n for n in summary.get("notes") or [] if n not in data.notes]
    compared = summary.get("compared")
    banner = _unscaled_banner(compared) if isinstance(compared, Mapping) else ""
    parts = [banner, f"<h1>{html.escape(data.target_name)}</h1>", _meta_line(data)]
    if warnings:
        parts.append(f"<div class='warnings'><h2>⚠ Warnings</h2>{_message_list(warnings)}</div>")
    if notes:
        parts.append(f"<div class='notes'><b>Notes</b>{_message_list(notes)}</div>")
    shown_as = ""
    if data.matches_seen_through:
        shown_as = (
            f" The matches are shown through {data.matches_seen_through}, as they were "
            f"compared, down to {plain_number(data.display_floor)} of the peak (above the "
            "target's noise)."
        )
    parts.append(_compared_section(data, figures))
    parts.append("<h2>Best matches</h2>" + _figure(figures, "matches.png", shown_as))
    parts.append("<h2>Parameter summary</h2>" + _summary_table(data))
    parts.append(
        "<h2>Parameter distributions</h2>"
        + _figure(figures, "parameters.png")
        + _figure(figures, "corner.png")
    )
    parts.append("<h2>Top matches</h2>" + _matches_table(data.matches))
    parts.append(_provenance(summary.get("provenance")))
    parts.append(
        "<p>Files: <a href='matches.csv'>matches.csv</a> · "
        "<a href='summary.json'>summary.json</a></p>"
    )
    return _page(f"protomatch: {data.target_name}", "\n".join(p for p in parts if p))


# --------------------------------------------------------------------------- public API


def write_match_report(out: Path, data: MatchReportData) -> list[Path]:
    """Write the match report of one target into the folder ``out``.

    Every figure is rendered before anything is written, and each file is written atomically,
    so a failure leaves no half-written file.

    Parameters
    ----------
    out : Path
        Output folder, created if needed.
    data : MatchReportData
        What to report.

    Returns
    -------
    list of Path
        The files written: matches.csv, summary.json, matches.png, parameters.png,
        corner.png, observation.png (when ``data.observed`` is given), index.html.
    """
    out = Path(out)
    data = dataclasses.replace(data, target_name=safe_name(data.target_name))
    figures = render_figures(data)
    page = _report_html(data, figures)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "matches.csv", out / "summary.json"]
    write_bytes_atomic(written[0], csv_bytes(data.matches))
    write_json_atomic(written[1], dict(data.summary))
    for name, png in figures.items():
        write_bytes_atomic(out / name, png)
        written.append(out / name)
    write_bytes_atomic(out / "index.html", page.encode())
    written.append(out / "index.html")
    log.debug("wrote match report of %s to %s", data.target_name, out)
    return written


def write_report_index(
    out: Path, entries: Sequence[tuple[str, Path, Mapping[str, Any]]], batch: str = ""
) -> Path:
    """Write ``out/index.html`` linking the reports of several targets.

    Parameters
    ----------
    out : Path
        Folder holding the per-target report folders.
    entries : sequence of (name, folder, summary)
        Target name, its report folder (relative to ``out``, or absolute) and its summary.
    batch : str
        What the batch misspecification test found, one sentence ("" for nothing).

    Returns
    -------
    Path
        The index page; thumbnails of each ``matches.png`` are embedded so it is self-contained.
    """
    out = Path(out)
    rows = []
    for name, folder, summary in entries:
        folder = Path(folder)
        location = folder if folder.is_absolute() else out / folder
        relative = Path(os.path.relpath(location, out)).as_posix()
        link = urllib.parse.quote(relative, errors="surrogateescape")
        thumb = location / "matches.png"
        image = (
            f"<img class='thumb' src='{_data_uri(thumb.read_bytes())}' alt='matches'>"
            if thumb.is_file()
            else ""
        )
        n_warn = len(summary.get("warnings") or [])
        warn = f"<b style='color:#a4161a'>⚠ {n_warn}</b>" if n_warn else "0"
        rows.append(
            f"<tr><td class='name'><a href='{html.escape(link)}/index.html'>"
            f"{html.escape(safe_name(name))}</a></td>"
            f"<td>{_num(summary.get('best_similarity'))}</td>"
            f"<td>{html.escape(str(summary.get('n_matches', '–')))}</td><td>{warn}</td>"
            f"<td class='name'><a href='{html.escape(link)}/index.html'>{image}</a></td></tr>"
        )
    body = (
        f"<h1>protomatch reports</h1><p class='meta'>{len(rows)} targets</p>"
        + (f"<p class='meta'><b>{html.escape(batch)}</b></p>" if batch else "")
        + "<div class='scroll'><table><tr><th class='name'>target</th><th>best similarity</th>"
        "<th>matches</th><th>warnings</th><th class='name'>best matches</th></tr>"
        + "".join(rows)
        + "</table></div>"
    )
    path = out / "index.html"
    write_bytes_atomic(path, _page("protomatch reports", body).encode())
    return path
