"""Library descriptions: options over library.yaml over file attributes, each with its source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protomatch.errors import InputError
from protomatch.library.description import (
    LibraryDescription,
    read_description,
    read_file_attributes,
)
from protomatch.library.ingest import IngestConfig, ingest_library
from protomatch.library.store import LibraryStore
from tests.conftest import write_foreign_library

SIDE = 40


def _ingest(src: Path, out: Path, **kwargs: object) -> LibraryStore:
    ingest_library(src, out, config=IngestConfig(size=32), workers=1, **kwargs)  # type: ignore[arg-type]
    return LibraryStore.open(out)


def test_no_attributes_means_unknown_and_says_what_it_disables(tmp_path: Path) -> None:
    lib = write_foreign_library(tmp_path / "lib", {"pixel_size": 12.5})
    result = ingest_library(lib, tmp_path / "store", config=IngestConfig(size=32), workers=1)
    store = LibraryStore.open(tmp_path / "store")
    assert store.au_per_pixel is None
    assert store.intensity_unit is None
    text = result.describe()
    assert "pixel scale: UNKNOWN" in text
    assert "pixel_size, whose unit is not stated" in text
    assert "--au-per-pixel" in text
    assert "intensity unit: UNKNOWN" in text
    description = store.manifest["description"]
    assert description["unrecognised_attributes"] == ["pixel_size"]


def test_option_sets_scale_and_unit_with_source(tmp_path: Path) -> None:
    lib = write_foreign_library(tmp_path / "lib")
    given = LibraryDescription(au_per_pixel=20.0, intensity_unit="Jy/sr")
    store = _ingest(lib, tmp_path / "store", described=given)
    # 40 px of 20 AU resized to 32 px: 25 AU per stored pixel
    assert store.au_per_pixel == pytest.approx(20.0 * SIDE / 32)
    assert store.intensity_unit == "Jy/sr"
    described = store.manifest["description"]
    assert described["au_per_pixel"]["source"] == "--au-per-pixel"
    assert described["au_per_pixel"]["field_au"] == pytest.approx(800.0)
    assert described["intensity_unit"] == {"value": "Jy/sr", "source": "--intensity-unit"}


def test_description_file_field_of_view_and_parameters(tmp_path: Path) -> None:
    lib = write_foreign_library(tmp_path / "lib")
    (lib / "library.yaml").write_text(
        "field_of_view_au: 1200\nintensity_unit: MJy/sr\n"
        "parameters:\n  mass: {unit: Msun, log: true}\n  disk_size: {unit: au}\n"
    )
    store = _ingest(lib, tmp_path / "store")
    assert store.au_per_pixel == pytest.approx(1200 / 32)
    assert store.param_names == ("mass", "disk_size")
    assert store.units == {"mass": "Msun", "disk_size": "au"}
    assert store.described_log10 == {"mass": True}
    described = store.manifest["description"]
    assert described["au_per_pixel"]["source"] == "library.yaml"
    assert described["intensity_unit"]["source"] == "library.yaml"


def test_options_win_over_file_and_file_over_attributes(tmp_path: Path) -> None:
    lib = write_foreign_library(tmp_path / "lib", {"AU_per_pixel": 5.0, "BUNIT": "mJy/sr"})
    plain = _ingest(lib, tmp_path / "s1")
    assert plain.au_per_pixel == pytest.approx(5.0 * SIDE / 32)
    assert (
        plain.manifest["description"]["au_per_pixel"]["source"] == "file attribute 'AU_per_pixel'"
    )
    assert plain.intensity_unit == "mJy/sr"
    (lib / "library.yaml").write_text("au_per_pixel: 7.0\n")
    from_file = _ingest(lib, tmp_path / "s2")
    assert from_file.au_per_pixel == pytest.approx(7.0 * SIDE / 32)
    from_option = _ingest(lib, tmp_path / "s3", described=LibraryDescription(au_per_pixel=9.0))
    assert from_option.au_per_pixel == pytest.approx(9.0 * SIDE / 32)


def test_recognised_attribute_names() -> None:
    for name in ("au_per_pixel", "pixel_scale_au", "pixel_size_au", "AU_PER_PIX"):
        found = read_file_attributes({name: 4.0}, 100).au_per_pixel
        assert found is not None and found.value == 4.0
    fov = read_file_attributes({"fov_au": 400.0}, 100).au_per_pixel
    assert fov is not None and fov.value == pytest.approx(4.0)
    ambiguous = read_file_attributes({"pixel_scale": 4.0, "dx": 1.0, "code": "x"}, 100)
    assert ambiguous.au_per_pixel is None
    assert ambiguous.ambiguous == ("dx", "pixel_scale")
    unit = read_file_attributes({"intensity_unit": b"MJy/sr (1.3 mm)"}, 100).intensity_unit
    assert unit is not None and unit.value == "MJy/sr"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("au_per_pixel: -3\n", "au_per_pixel"),
        ("au_per_pixel: far\n", "au_per_pixel"),
        ("au_per_pixel: 3\nfield_of_view_au: 4\n", "not both"),
        ("pixel_scale: 3\n", "pixel_scale: Extra inputs"),
        ("[1, 2]\n", "YAML mapping"),
        ("au_per_pixel: [\n", "cannot be read as YAML"),
        ("parameters: {}\n", "at least one parameter"),
    ],
)
def test_bad_description_file(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "library.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as caught:
        read_description(path)
    assert str(path) in str(caught.value)


def test_cli_ingest_bad_description_exits_2_and_writes_nothing(tmp_path: Path, run_cli) -> None:
    lib = write_foreign_library(tmp_path / "lib")
    (lib / "library.yaml").write_text("au_per_pixel: 0\n")
    status, _, err = run_cli("ingest", lib, "-o", tmp_path / "store")
    assert status == 2
    assert err.strip().splitlines() == [
        f"protomatch: error: {lib / 'library.yaml'}: au_per_pixel: Input should be greater than 0"
    ]
    assert not (tmp_path / "store").exists()


def test_cli_ingest_both_scales_exits_2(tmp_path: Path, run_cli) -> None:
    lib = write_foreign_library(tmp_path / "lib")
    status, _, err = run_cli(
        "ingest", lib, "-o", tmp_path / "s", "--au-per-pixel", 3, "--field-of-view-au", 9
    )
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "not both" in err


def test_cli_ingest_prints_the_description(tmp_path: Path, run_cli) -> None:
    lib = write_foreign_library(tmp_path / "lib")
    status, out, _ = run_cli(
        "ingest", lib, "-o", tmp_path / "s", "--au-per-pixel", 20, "--intensity-unit", "Jy/sr",
        "--size", 32,
    )  # fmt: skip
    assert status == 0
    assert "pixel scale: 25 AU/pixel as stored (field 800 AU), from --au-per-pixel" in out
    assert "intensity unit: Jy/sr, from --intensity-unit" in out


def test_catalog_description_must_name_catalog_parameters(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    root.mkdir()
    for i in range(2):
        np.save(root / f"img{i}.npy", np.ones((SIDE, SIDE)) + i)
    (root / "catalog.csv").write_text("file,system,mass [Msun]\nimg0.npy,a,1.0\nimg1.npy,b,2.0\n")
    (root / "library.yaml").write_text("au_per_pixel: 10\nparameters:\n  age: {}\n")
    with pytest.raises(InputError, match="names parameters the catalog lacks: age"):
        _ingest(root, tmp_path / "store")
    (root / "library.yaml").write_text("au_per_pixel: 10\n")
    store = _ingest(root, tmp_path / "store")
    assert store.au_per_pixel == pytest.approx(10 * SIDE / 32)
    assert store.units == {"mass": "Msun"}
