"""The independent forward model: file schema, protomatch compatibility, physics, seeds."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.io import fits

import independent_model as im

NAMES = list(im.PARAMETERS)
SMALL = im.LibrarySettings(systems=2, snapshots=2, size=16, au_per_pixel=24.0, seed=5)
N_OBS = 4
OBS_SEED = 9


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("indep") / "library"
    im.make_library(out, SMALL, workers=1, argv=["library", str(out)])
    return out


@pytest.fixture(scope="module")
def observations(library: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("indep") / "observations"
    im.make_observations(out, library, N_OBS, OBS_SEED, workers=1, argv=[])
    return out


def disk_only(**changes: object) -> im.Snapshot:
    """An isothermal 30 K disk (R90 = 100 AU, gamma = 1, h/R = 0.1 at 100 AU), nothing else."""
    params = dict.fromkeys(NAMES, 1.0) | {"temperature": 30.0, "disk_size": 100.0}
    state = im.Snapshot(
        params=params,
        disk_mass=1e-5,
        surface_index=1.0,
        aspect_100=0.1,
        centrifugal_radius=50.0,
        envelope_rho0=0.0,
        cavity_width=100.0,
        cavity_contrast=0.01,
        t_slope=0.0,
        midplane_cooling=0.0,
    )
    return dataclasses.replace(state, **changes)


def centre_intensity(state: im.Snapshot, inclination: float, col: float = 0.0) -> float:
    basis = im.view_basis(inclination, 0.0, 0.0)
    image = im.render(state, basis, np.array([col]), np.array([0.0]), im.LineOfSight.stretched())
    return float(image[0, 0])


# ----------------------------------------------------------------- files


def test_library_files_follow_the_schema(library: Path) -> None:
    files = sorted(library.rglob("*.hdf5"))
    assert len(files) == SMALL.systems * SMALL.snapshots
    for path in files:
        match = re.fullmatch(r"output_(\d{6})_isink_(\d+)_data\.hdf5", path.name)
        assert match and path.parent.name == f"sink{match.group(2)}"
        with h5py.File(path, "r") as handle:
            assert dict(handle.attrs) == {}  # the scale and unit are given at ingest
            for k in range(1, 9):
                image = handle[f"intensity_projection_{k}"][()]
                assert image.shape == (SMALL.size, SMALL.size) and image.dtype == np.float32
                assert np.isfinite(image).all() and image.min() > 0
            for name in NAMES:
                assert handle[name].shape == ()
                assert math.isfinite(handle[name][()]) and handle[name][()] > 0
    record = json.loads((library / "model.json").read_text())
    assert record["systems"] == [1, 2] and record["seed"] == SMALL.seed
    assert record["command"][1:] == ["library", str(library)]
    assert not list(library.parent.glob(".*tmp"))


def test_snapshots_are_one_system_growing_older(library: Path) -> None:
    states = [state for _, state in im.system_snapshots(SMALL, 1)]
    ages = [s.params["age"] for s in states]
    assert ages == sorted(ages)
    assert states[1].params["mass"] > states[0].params["mass"]
    assert states[1].params["Envelope_mass"] < states[0].params["Envelope_mass"]
    assert states[1].params["disk_size"] >= states[0].params["disk_size"]


def test_protomatch_ingests_the_library(library: Path, tmp_path: Path, run_cli) -> None:
    import pandas as pd

    store = tmp_path / "store"
    status, _, err = run_cli(
        "ingest", library, "-o", store, "--au-per-pixel", SMALL.au_per_pixel,
        "--intensity-unit", "Jy/sr", "--size", 16, "--workers", 1,
    )  # fmt: skip
    assert status == 0, err
    manifest = json.loads((store / "manifest.json").read_text())
    files = SMALL.systems * SMALL.snapshots
    assert manifest["counts"] == {"files": files, "images": 8 * files, "skipped": 0}
    assert manifest["intensity_unit"] == "Jy/sr"
    table = pd.read_parquet(store / "params.parquet")
    with h5py.File(sorted(library.rglob("*.hdf5"))[0]) as handle:
        mass = float(handle["mass"][()])
    assert np.isclose(table["mass"], mass).sum() == 8


def test_observations_are_read_by_protomatch(observations: Path) -> None:
    import pandas as pd

    from protomatch.matching.observation import read_observation
    from protomatch.simulators.truth import read_truth

    truth = read_truth(observations, NAMES)
    assert len(truth) == N_OBS
    assert set(im.TRUTH_COLUMNS) <= set(pd.read_csv(observations / "truth.csv").columns)
    for row in truth.to_dict("records"):
        obs = read_observation(observations / row["file"])
        assert obs.intensity_unit == "Jy/beam"
        assert obs.distance_pc == pytest.approx(row["distance_pc"])
        assert obs.physical_pixel_au == pytest.approx(row["pixel_au"], rel=1e-6)
        major, minor, pa = obs.beam_arcsec
        assert major * row["distance_pc"] == pytest.approx(row["beam_major_au"], rel=1e-6)
        assert minor * row["distance_pc"] == pytest.approx(row["beam_minor_au"], rel=1e-6)
        assert pa == pytest.approx(row["beam_pa_deg"])
        assert 3.0 <= row["beam_major_au"] / row["pixel_au"] <= 6.0
    systems = json.loads((observations / "model.json").read_text())["systems"]
    assert not set(systems) & {1, 2}


def test_cubes_and_blanked_images_are_read(tmp_path: Path) -> None:
    from protomatch.matching.observation import read_observation

    state = disk_only(disk_mass=0.01)
    cond = im.draw_conditions(np.random.default_rng(1), 384.0)
    cond = dataclasses.replace(cond, cube=True, blank=0.45)
    image = im.observe(state, cond, np.random.default_rng(2))["image"]
    path = tmp_path / "cube.fits"
    path.write_bytes(im.fits_bytes(image, cond, "test"))
    assert fits.getdata(path).shape == (1, 1, cond.npix, cond.npix)
    obs = read_observation(path)
    assert obs.image.shape == (cond.npix, cond.npix)
    assert np.isnan(obs.image[0, 0]) and np.isfinite(obs.image[cond.npix // 2, cond.npix // 2])
    assert obs.beam_arcsec is not None and obs.pixel_scale_arcsec is not None


def test_a_non_empty_output_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    status = im.main(["library", str(out), "--systems", "1", "--snapshots", "1"])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and "not empty" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


# ----------------------------------------------------------------- seeds


def _tiny_library(out: Path, seed: int) -> list[bytes]:
    settings = im.LibrarySettings(systems=1, snapshots=1, size=16, au_per_pixel=24.0, seed=seed)
    im.make_library(out, settings, workers=1, argv=[])
    return [p.read_bytes() for p in sorted(out.rglob("*.hdf5"))]


def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path) -> None:
    first = _tiny_library(tmp_path / "a", seed=3)
    assert first == _tiny_library(tmp_path / "b", seed=3)
    assert first != _tiny_library(tmp_path / "c", seed=4)
    with (
        h5py.File(next((tmp_path / "a").rglob("*.hdf5"))) as a,
        h5py.File(next((tmp_path / "c").rglob("*.hdf5"))) as c,
    ):
        assert not np.allclose(a["intensity_projection_1"][()], c["intensity_projection_1"][()])


def test_observations_repeat_with_their_seed(observations: Path, library: Path) -> None:
    again = observations.parent / "again"
    im.make_observations(again, library, 1, OBS_SEED, workers=1, argv=[])
    assert (again / "obs_000.fits").read_bytes() == (observations / "obs_000.fits").read_bytes()


# ----------------------------------------------------------------- physics


def test_planck_function_at_hand_checked_values() -> None:
    # h nu / k = 11.04 K at 230 GHz; 2 h nu^3 / c^2 = 1.7948e-13 erg/s/cm^2/Hz/sr
    expected = 1.7948e10 / math.expm1(11.0383 / 30.0)
    assert im.planck_jy_sr(np.float64(30.0)) == pytest.approx(expected, rel=1e-3)


def test_thin_face_on_disk_gives_planck_times_optical_depth() -> None:
    state = disk_only()
    rc = state.taper_radius  # gamma = 1: Sigma(Rc) = Sigma_c / e
    sigma_c = state.disk_mass * im.MSUN_G / (2 * math.pi * (rc * im.AU_CM) ** 2)
    tau = im.KAPPA_CM2_PER_G * sigma_c / math.e
    assert tau < 1e-3
    expected = im.planck_jy_sr(np.float64(30.0)) * tau
    assert centre_intensity(state, 0.0, col=rc) == pytest.approx(expected, rel=0.03)


def test_optically_thick_edge_on_disk_saturates_at_planck() -> None:
    thin = [centre_intensity(disk_only(disk_mass=m), 90.0) for m in (1e-7, 1e-6)]
    thick = [centre_intensity(disk_only(disk_mass=m), 90.0) for m in (0.05, 0.5)]
    assert thin[1] / thin[0] == pytest.approx(10.0, rel=0.02)  # thin: grows with column
    assert thick[1] / thick[0] == pytest.approx(1.0, abs=0.02)  # thick: saturated
    assert thick[1] == pytest.approx(im.planck_jy_sr(np.float64(30.0)), rel=0.02)


def test_a_larger_disk_is_more_extended() -> None:
    offsets = im.pixel_centres(64, 6.0)
    radius = np.hypot(offsets[:, None], offsets[None, :])
    basis = im.view_basis(0.0, 0.0, 0.0)

    def mean_radius(disk_size: float) -> float:
        state = disk_only(params=disk_only().params | {"disk_size": disk_size})
        image = im.render(state, basis, offsets, offsets, im.LineOfSight.stretched())
        return float((image * radius).sum() / image.sum())

    assert mean_radius(120.0) > 2.0 * mean_radius(30.0)


def test_view_basis_is_a_rotation_and_points_the_axis_at_its_angle() -> None:
    basis = im.view_basis(60.0, 40.0, 30.0)
    assert basis @ basis.T == pytest.approx(np.eye(3), abs=1e-12)
    assert np.linalg.det(basis) == pytest.approx(1.0)
    col, row = basis[0, 2], basis[1, 2]  # the disk axis on the sky, (col, row)
    assert math.degrees(math.atan2(-col, row)) == pytest.approx(30.0)  # east of north


@pytest.mark.parametrize(("pa", "long_axis"), [(0.0, 0), (90.0, 1)])
def test_beam_kernel_is_elongated_along_its_position_angle(pa: float, long_axis: int) -> None:
    kernel = im.beam_kernel(8.0, 4.0, pa)
    assert kernel.sum() == pytest.approx(1.0)
    profiles = kernel.sum(axis=1), kernel.sum(axis=0)  # along rows (north), columns
    spreads = [np.sqrt((p * (np.arange(p.size) - p.size // 2) ** 2).sum()) for p in profiles]
    assert spreads[long_axis] == pytest.approx(8.0 / math.sqrt(8 * math.log(2)), rel=0.02)
    assert spreads[1 - long_axis] == pytest.approx(4.0 / math.sqrt(8 * math.log(2)), rel=0.02)


def test_beam_solid_angle_by_hand() -> None:
    cond = im.draw_conditions(np.random.default_rng(0), 384.0)
    cond = dataclasses.replace(cond, beam_major_au=100.0, beam_minor_au=50.0, distance_pc=100.0)
    arcsec = math.pi / 648000.0  # 100 AU at 100 pc is 1 arcsec
    assert cond.beam_solid_angle_sr == pytest.approx(
        math.pi * arcsec * 0.5 * arcsec / (4 * math.log(2))
    )


def test_observation_keeps_flux_and_has_beam_correlated_noise_at_peak_over_snr(
    observations: Path, library: Path
) -> None:
    import pandas as pd

    field = json.loads((library / "model.json").read_text())["field_of_view_au"]
    truth = pd.read_csv(observations / "truth.csv")
    for index, row in enumerate(truth.to_dict("records")):
        _, cond, parts = im.observation_parts(index, OBS_SEED, row["system"], field)
        data = np.squeeze(fits.getdata(observations / row["file"])).astype(float)
        noise = data - parts["clean"]
        rms = float(np.nanstd(noise))
        assert rms == pytest.approx(np.max(parts["clean"]) / row["snr"], rel=0.2)
        lag = np.nanmean(noise[:, 1:] * noise[:, :-1]) / rms**2
        assert lag > 0.5  # the beam spans 3-6 pixels
        # Jy/beam summed over the image / beam area in pixels = Jy/sr summed x pixel area
        pixel_sr = (row["pixel_au"] / row["distance_pc"] * math.pi / 648000.0) ** 2
        flux_sky = parts["sky"].sum() * pixel_sr
        flux_beam = parts["clean"].sum() * pixel_sr / cond.beam_solid_angle_sr
        assert flux_beam == pytest.approx(flux_sky, rel=0.05)
