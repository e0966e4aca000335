"""Tests for the built-in simulator: physics, images, file schema, determinism, errors, CLI."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pydantic
import pytest
from scipy import integrate

from protomatch.errors import ProtomatchError, validated
from protomatch.library import schema
from protomatch.simulators._physics import SEED_MASS_MSUN
from protomatch.simulators.library import (
    FIELD_OF_VIEW_AU,
    VIEWING_DIRECTIONS_DEG,
    SimulateConfig,
    SimulationResult,
    accretion_luminosity,
    draw_system,
    evolve,
    photospheric_luminosity,
    render_projection,
    render_projections,
    simulate_library,
    snapshot_ages,
    stellar_radius,
)

SYSTEMS, SNAPSHOTS, SIZE, SEED = 3, 4, 32, 7
SCALARS = schema.DEFAULT_PARAMETERS
PROJECTIONS = tuple(schema.projection_dataset(i + 1) for i in range(schema.N_PROJECTIONS))


def _read_library(root: Path) -> dict[tuple[int, int], dict[str, object]]:
    """Every file's datasets and attributes, keyed by (system, snapshot number)."""
    library: dict[tuple[int, int], dict[str, object]] = {}
    for path in sorted(root.glob("sink*/*.hdf5")):
        match = schema.LIBRARY_FILE_PATTERN.match(path.name)
        assert match is not None, path.name
        snapshot, system = int(match.group(1)), int(match.group(2))
        assert path.parent.name == f"sink{system}"
        with h5py.File(path, "r") as f:
            entry: dict[str, object] = {name: f[name][()] for name in f}
            entry["_dtypes"] = {name: f[name].dtype for name in f}
            entry["_shapes"] = {name: f[name].shape for name in f}
            entry["_attrs"] = dict(f.attrs)
        library[(system, snapshot)] = entry
    return library


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimulationResult, dict]:
    out = tmp_path_factory.mktemp("sim") / "library"
    config = SimulateConfig(systems=SYSTEMS, snapshots=SNAPSHOTS, size=SIZE, seed=SEED)
    result = simulate_library(out, config=config, workers=1, preview=True)
    return result, _read_library(out)


def _by_system(files: dict) -> dict[int, list[dict]]:
    systems: dict[int, list[dict]] = {}
    for (system, _), entry in sorted(files.items()):
        systems.setdefault(system, []).append(entry)
    return systems


def _axis_ratio(image: np.ndarray) -> float:
    """Minor/major axis ratio from intensity-weighted second moments of the image."""
    n = image.shape[0]
    y, x = np.mgrid[0:n, 0:n] + 0.5 - n / 2
    w = image.astype(np.float64) / image.sum()
    cx, cy = (w * x).sum(), (w * y).sum()
    xx, yy = (w * (x - cx) ** 2).sum(), (w * (y - cy) ** 2).sum()
    xy = (w * (x - cx) * (y - cy)).sum()
    low, high = np.linalg.eigvalsh([[xx, xy], [xy, yy]])
    return math.sqrt(low / high)


def _half_light_radius(image: np.ndarray) -> float:
    n = image.shape[0]
    y, x = np.mgrid[0:n, 0:n] + 0.5 - n / 2
    radius = np.hypot(x, y).ravel()
    order = np.argsort(radius)
    cumulative = np.cumsum(image.ravel()[order].astype(np.float64))
    return float(radius[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def _late_state(seed: int = 3) -> object:
    return evolve(draw_system(np.random.default_rng(seed)), 4)[-1]


# --- file schema and library ------------------------------------------------------------------


def test_file_schema(library: tuple[SimulationResult, dict]) -> None:
    result, files = library
    assert len(files) == SYSTEMS * SNAPSHOTS == result.n_files
    assert {system for system, _ in files} == set(range(1, SYSTEMS + 1))
    for entry in files.values():
        names = {n for n in entry if not n.startswith("_")}
        assert names == set(PROJECTIONS) | set(SCALARS)
        for name in PROJECTIONS:
            assert entry["_dtypes"][name] == np.float32
            assert entry["_shapes"][name] == (SIZE, SIZE)
        for name in SCALARS:
            assert entry["_shapes"][name] == ()
            assert entry["_dtypes"][name] == np.float64
            assert np.isscalar(entry[name]) and math.isfinite(entry[name])
        assert entry["_attrs"][schema.PIXEL_SCALE_ATTRIBUTE] == pytest.approx(
            FIELD_OF_VIEW_AU / SIZE
        )


def test_manifest_and_result(library: tuple[SimulationResult, dict]) -> None:
    result, _ = library
    manifest = json.loads((result.out / "manifest.json").read_text())
    assert manifest["kind"] == "simulated-library"
    assert manifest["parameters"] == dict(schema.PARAMETER_UNITS)
    assert manifest["counts"]["images"] == result.n_images == SYSTEMS * SNAPSHOTS * 8
    assert manifest["settings"]["seed"] == SEED
    assert manifest["settings"]["field_of_view_au"] == FIELD_OF_VIEW_AU
    assert manifest["settings"]["au_per_pixel"] == FIELD_OF_VIEW_AU / SIZE
    assert next(p["inclination_deg"] for p in manifest["projections"]) == 0.0
    text = result.describe()
    assert str(result.out) in text and "images/s" in text and str(result.preview) in text


def test_preview_is_a_png(library: tuple[SimulationResult, dict]) -> None:
    result, _ = library
    assert result.preview == result.out / "preview.png"
    data = result.preview.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 600 and height >= 300 and len(data) > 20_000


def test_evolution_along_each_system(library: tuple[SimulationResult, dict]) -> None:
    _, files = library
    for snapshots in _by_system(files).values():
        for name, sign in (("age", 1), ("mass", 1), ("disk_size", 1), ("Envelope_mass", -1)):
            values = np.array([s[name] for s in snapshots])
            assert np.all(sign * np.diff(values) > 0), (name, values)
        assert all(s["Envelope_mass"] > 0 for s in snapshots)


def test_luminosity_includes_accretion_luminosity(library: tuple[SimulationResult, dict]) -> None:
    _, files = library
    for entry in files.values():
        mass, rate = entry["mass"], entry["accretion_rate"]
        radius = stellar_radius(mass, rate)
        l_acc = accretion_luminosity(mass, rate, radius)
        assert entry["luminosity"] >= l_acc > 0
        assert entry["luminosity"] == pytest.approx(l_acc + photospheric_luminosity(mass, radius))
    ratios = [e["temperature"] / e["luminosity"] ** 0.25 for e in files.values()]
    assert np.ptp(ratios) < 1e-9 * np.mean(ratios)  # T_ref scales exactly as L^(1/4)


def test_stellar_mass_is_the_integrated_accretion_rate() -> None:
    rng = np.random.default_rng(11)
    histories = [draw_system(rng) for _ in range(12)]
    assert any(h.burst_onsets for h in histories)
    for history in histories:
        ages = snapshot_ages(history, 6)
        for age in ages:
            kinks = [t for t in history.burst_onsets if t < age]
            integral, _ = integrate.quad(
                lambda t, h=history: float(h.accretion_rate(t)),
                0.0,
                age,
                points=kinks or None,
                limit=400,
                epsrel=1e-10,
            )
            assert history.stellar_mass(age) == pytest.approx(SEED_MASS_MSUN + integral, rel=1e-6)


def test_parameters_span_realistic_ranges() -> None:
    rng = np.random.default_rng(2)
    states = [s for _ in range(150) for s in evolve(draw_system(rng), 6)]
    values = {name: np.array([s.parameters()[name] for s in states]) for name in SCALARS}
    for name in ("accretion_rate", "luminosity"):
        assert values[name].max() / values[name].min() > 100, name
    assert values["age"].min() > 5e3 and values["age"].max() < 1.1e6
    assert values["mass"].min() > 0.01 and values["mass"].max() < 4.0
    assert values["disk_size"].min() > 5.0 and values["disk_size"].max() < 400.0
    assert values["Envelope_mass"].min() > 0.01 and values["Envelope_mass"].max() < 8.0
    assert values["accretion_rate"].min() > 1e-10 and values["accretion_rate"].max() < 1e-3
    cavity = [[s.cavity_angle for s in evolve(draw_system(rng), 5)] for _ in range(5)]
    assert all(np.all(np.diff(c) >= 0) for c in cavity)


def test_progress_bar_counts_systems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    config = SimulateConfig(systems=2, snapshots=1, size=16)
    simulate_library(tmp_path / "lib", config=config, workers=1)
    assert "simulate: 100%" in terminal.getvalue() and "2/2" in terminal.getvalue()


# --- field of view ----------------------------------------------------------------------------


def test_field_of_view_sets_the_pixel_scale_and_what_a_pixel_sees(tmp_path: Path) -> None:
    """Half the field at the same side: 25 AU pixels, and the system twice as large in pixels.

    ``narrow`` (800 AU over 32 px) and ``wide`` (1600 AU over 64 px) both have 25 AU pixels at
    the same offsets from the star, so the narrow image is the centre of the wide one, less the
    line of sight between 400 and 800 AU in front and behind, which only the wider (deeper)
    cube integrates: never fainter, and within 1 % at the peak, where the disk dominates.
    """
    settings = {"systems": 1, "snapshots": 2, "seed": SEED}
    narrow_config = SimulateConfig(size=SIZE, field_of_view_au=800.0, **settings)
    wide_config = SimulateConfig(size=2 * SIZE, field_of_view_au=1600.0, **settings)
    simulate_library(tmp_path / "narrow", config=narrow_config, workers=1)
    simulate_library(tmp_path / "wide", config=wide_config, workers=1)
    narrow, wide = _read_library(tmp_path / "narrow"), _read_library(tmp_path / "wide")
    manifest = json.loads((tmp_path / "narrow" / "manifest.json").read_text())
    assert manifest["settings"]["field_of_view_au"] == 800.0
    assert manifest["settings"]["au_per_pixel"] == 800.0 / SIZE == narrow_config.au_per_pixel
    assert narrow.keys() == wide.keys() and len(narrow) == 2
    quarter = SIZE // 2
    for key, entry in narrow.items():
        assert entry["_attrs"][schema.PIXEL_SCALE_ATTRIBUTE] == 25.0
        assert entry["_attrs"]["field_of_view_au"] == 800.0
        assert wide[key]["_attrs"]["field_of_view_au"] == 1600.0
        assert all(entry[name] == wide[key][name] for name in SCALARS)
        for name in PROJECTIONS:
            image = entry[name]
            centre = wide[key][name][quarter : quarter + SIZE, quarter : quarter + SIZE]
            assert np.all(centre >= image * (1 - 1e-5)), (key, name)
            peak = np.unravel_index(np.argmax(image), image.shape)
            assert centre[peak] == pytest.approx(image[peak], rel=0.01), (key, name)


# --- images -----------------------------------------------------------------------------------


def test_images_finite_non_negative_and_distinct(library: tuple[SimulationResult, dict]) -> None:
    _, files = library
    images = [entry[name] for entry in files.values() for name in PROJECTIONS]
    for image in images:
        assert np.all(np.isfinite(image)) and image.min() >= 0 and image.max() > 0
        assert image.max() / max(float(np.median(image)), 1e-30) > 10  # large dynamic range
    flat = np.stack([image.ravel() for image in images])
    assert len(np.unique(flat, axis=0)) == len(images)


def test_larger_disk_gives_more_extended_emission() -> None:
    state = _late_state()
    radii = [
        _half_light_radius(
            render_projection(dataclasses.replace(state, disk_size=d), (0.0, 0.0), size=48)
        )
        for d in (40.0, 250.0)
    ]
    assert radii[1] > 1.5 * radii[0]


def test_edge_on_is_elongated_and_face_on_round() -> None:
    state = dataclasses.replace(_late_state(), disk_size=250.0, clump_sigma=0.1)
    face_on = render_projection(state, (0.0, 0.0), size=48)
    edge_on = render_projection(state, (math.pi / 2, 0.3), size=48)
    assert _axis_ratio(face_on) > 0.95
    assert _axis_ratio(edge_on) < 0.75


def test_direction_forms_and_position_angle_agree() -> None:
    state = _late_state(5)
    as_angles = render_projection(state, (0.0, 0.0), size=24)
    as_vector = render_projection(state, (0.0, 0.0, 2.0), size=24)
    np.testing.assert_allclose(as_vector, as_angles, rtol=1e-5)
    tilted = render_projection(state, (1.0, 0.4), size=24)
    rotated = render_projection(state, (1.0, 0.4), size=24, position_angle=math.pi / 2)
    np.testing.assert_allclose(rotated, np.rot90(tilted), rtol=1e-3)
    with pytest.raises(ValueError, match="non-zero"):
        render_projection(state, (0.0, 0.0, 0.0), size=24)


def test_render_projections_match_the_library_directions() -> None:
    state = _late_state()
    images = render_projections(state, size=16)
    assert images.shape == (len(VIEWING_DIRECTIONS_DEG), 16, 16)
    incl, az = (math.radians(a) for a in VIEWING_DIRECTIONS_DEG[5])
    np.testing.assert_array_equal(images[5], render_projection(state, (incl, az), size=16))


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_same_library_for_any_worker_count(
    library: tuple[SimulationResult, dict], tmp_path: Path
) -> None:
    _, files = library
    config = SimulateConfig(systems=SYSTEMS, snapshots=SNAPSHOTS, size=SIZE, seed=SEED)
    simulate_library(tmp_path / "parallel", config=config, workers=2)
    parallel = _read_library(tmp_path / "parallel")
    assert parallel.keys() == files.keys()
    for key, entry in files.items():
        for name in (*PROJECTIONS, *SCALARS):
            np.testing.assert_array_equal(parallel[key][name], entry[name])


def test_other_seed_gives_other_library(
    library: tuple[SimulationResult, dict], tmp_path: Path
) -> None:
    _, files = library
    config = SimulateConfig(systems=1, snapshots=1, size=SIZE, seed=SEED + 1)
    simulate_library(tmp_path / "other", config=config, workers=1)
    (other,) = _read_library(tmp_path / "other").values()
    first = min(k for k in files if k[0] == 1)
    assert other["age"] != files[first]["age"]
    assert not np.array_equal(other[PROJECTIONS[0]], files[first][PROJECTIONS[0]])


# --- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"systems": 0}, "systems: must be at least 1"),
        ({"snapshots": -2}, "snapshots: must be at least 1"),
        ({"size": 8}, "size: must be at least 16"),
        ({"seed": -1}, "seed: must be a non-negative"),
        ({"systems": 2.5}, "systems: must be an integer"),
        ({"size": True}, "size: must be an integer"),
        ({"field_of_view_au": 700.0}, "field_of_view_au: must be at least 800 AU, got 700"),
        ({"field_of_view_au": 4096}, "field_of_view_au: must be at most 2048 AU, got 4096"),
        ({"field_of_view_au": math.nan}, "field_of_view_au: must be a finite number of AU"),
        ({"field_of_view_au": -math.inf}, "field_of_view_au: must be a finite number of AU"),
        ({"field_of_view_au": "wide"}, "field_of_view_au: must be a number of AU"),
        ({"field_of_view_au": True}, "field_of_view_au: must be a number of AU"),
        ({"size": 16, "field_of_view_au": 2000.0}, r"config: pixels of 125 AU .* size >= 20"),
        ({"sistems": 2}, "sistems: Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        SimulateConfig(**kwargs)
    with pytest.raises(ProtomatchError, match=message):
        validated(SimulateConfig, **kwargs)


def test_bad_workers_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = SimulateConfig(systems=1, snapshots=1, size=16)
    with pytest.raises(ProtomatchError, match="workers must be at least 1"):
        simulate_library(out, config=config, workers=0)
    assert list(tmp_path.iterdir()) == []


def test_non_empty_output_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    config = SimulateConfig(systems=1, snapshots=1, size=16)
    with pytest.raises(ProtomatchError, match="not empty"):
        simulate_library(out, config=config, workers=1)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    simulate_library(out, config=config, workers=1, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "manifest.json").is_file()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "protomatch", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--systems", "0"], "systems: must be at least 1"),
        (["--size", "4"], "at least 16"),
        (["--size", "16", "--field-of-view-au", "1700"], "too coarse to resolve disks"),
    ],
)
def test_cli_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out"
    done = _cli(str(out), *args)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("protomatch: error:") and message in lines[0]
    assert "Traceback" not in done.stderr
    assert not out.exists()


def test_cli_writes_a_library(tmp_path: Path) -> None:
    out = tmp_path / "lib"
    args = ("--systems", "1", "--snapshots", "2", "--size", "16", "--field-of-view-au", "960")
    done = _cli(str(out), *args, "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert "16 images" in done.stdout and str(out) in done.stdout
    files = sorted(out.glob("sink1/output_*_isink_1_data.hdf5"))
    assert len(files) == 2
    with h5py.File(files[0], "r") as f:
        assert f.attrs[schema.PIXEL_SCALE_ATTRIBUTE] == 60.0
        assert f.attrs["field_of_view_au"] == 960.0
