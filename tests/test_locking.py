"""Claiming outputs: one run per output (OS lock), never over an input or another kind."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from protomatch._locking import artefact_kind, claim_output, output_lock
from protomatch.errors import InputError
from protomatch.library.ingest import ingest_library
from tests.conftest import write_foreign_library
from tests.processes import kill, needs_proc, start_protomatch, wait_for

_HOLD_LOCK = (
    "import sys, time\n"
    "from protomatch._locking import output_lock\n"
    "with output_lock(sys.argv[1]):\n"
    "    print('locked', flush=True)\n"
    "    time.sleep(60)\n"
)


def _lock_holder(out: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    return holder


def test_an_output_in_use_by_another_process_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "report"
    holder = _lock_holder(out)
    try:
        with (
            pytest.raises(
                InputError, match=rf"in use by another protomatch run \(pid {holder.pid}\)"
            ),
            output_lock(out),
        ):
            pass
    finally:
        kill(holder)


def test_a_killed_runs_lock_is_released_and_removed(tmp_path: Path) -> None:
    out = tmp_path / "report"
    kill(_lock_holder(out))
    assert (tmp_path / ".report.lock").exists()  # SIGKILL left the file, not the lock
    with output_lock(out):
        pass
    assert list(tmp_path.iterdir()) == []


@needs_proc
@pytest.mark.slow
def test_a_second_ingest_into_the_same_output_stops_with_one_line(tmp_path: Path, run_cli) -> None:
    library = write_foreign_library(
        tmp_path / "library", {"au_per_pixel": 10.0, "intensity_unit": "Jy/sr"}, systems=100
    )
    out = tmp_path / "store"
    first = start_protomatch("ingest", library, "-o", out, "--workers", 1)
    try:
        lock = tmp_path / ".store.lock"
        wait_for(lambda: lock.is_file() and lock.read_text().strip(), 60, "the first run's lock")
        status, _, err = run_cli("ingest", library, "-o", out, "--overwrite")
        assert first.poll() is None, "the first run ended before the second tried"
        assert status == 2
        assert err == (
            f"protomatch: error: {out}: is in use by another protomatch run (pid {first.pid}); "
            "wait for it or choose another output\n"
        )
        _, first_err = first.communicate(timeout=120)
        assert first.returncode == 0, first_err
    finally:
        kill(first)
    assert artefact_kind(out) == "library-store"
    assert not lock.exists()


def test_index_refuses_to_replace_its_own_library_store(
    tiny_model: Path, tiny_store: Path, tmp_path: Path, run_cli
) -> None:
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    status, _, err = run_cli("index", tiny_model, store, "-o", store, "--overwrite")
    assert status == 2
    assert "is one of this command's inputs" in err and len(err.splitlines()) == 1
    assert artefact_kind(store) == "library-store"


def test_an_output_holding_an_input_is_refused(tmp_path: Path) -> None:
    observation = tmp_path / "observations" / "target.fits"
    observation.parent.mkdir()
    observation.write_bytes(b"")
    with (
        pytest.raises(InputError, match="holds this command's input"),
        claim_output(
            tmp_path / "observations", "match-report", overwrite=True, inputs=[observation]
        ),
    ):
        pass


def test_overwrite_refuses_an_artefact_of_another_kind(
    tiny_model: Path, tiny_store: Path, tmp_path: Path, run_cli
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    status, _, err = run_cli("index", tiny_model, tiny_store, "-o", model, "--overwrite")
    assert status == 2
    assert "holds a protomatch model, not the index this command writes" in err
    assert artefact_kind(model) == "model" and (model / "model.safetensors").is_file()


def test_overwrite_replaces_an_artefact_of_the_same_kind(
    tiny_library: Path, tmp_path: Path
) -> None:
    out = tmp_path / "store"
    ingest_library(tiny_library, out, workers=1)
    with pytest.raises(InputError, match="pass --overwrite"):
        ingest_library(tiny_library, out, workers=1)
    ingest_library(tiny_library, out, workers=1, overwrite=True)
    assert artefact_kind(out) == "library-store"


@pytest.mark.parametrize("content", ["{not json", '{"kind": ' + "9" * 5000 + "}", "\udcff"])
def test_an_unreadable_manifest_names_no_kind(tmp_path: Path, content: str) -> None:
    # a 5000-digit integer raised ValueError from json before manifests were read via read_json
    (tmp_path / "manifest.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    assert artefact_kind(tmp_path) is None
