from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from protomatch._artefact import (
    atomic_directory,
    atomic_path,
    provenance,
    read_manifest,
    remove_stale_temporaries,
    write_json_atomic,
)
from protomatch.errors import InputError


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"]


def test_atomic_files_are_readable_by_others_as_umask_allows(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644


def test_atomic_directory_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "artefact"
    with pytest.raises(RuntimeError), atomic_directory(out) as tmp:
        (tmp / "part").write_text("x")
        raise RuntimeError("interrupted")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with atomic_directory(out) as tmp:
        (tmp / "part").write_text("x")
    assert (out / "part").read_text() == "x"


def test_atomic_directory_refuses_a_non_empty_output(tmp_path: Path) -> None:
    (tmp_path / "keep").write_text("precious")
    with pytest.raises(InputError, match="not empty"), atomic_directory(tmp_path):
        pass
    assert (tmp_path / "keep").read_text() == "precious"


def test_manifest_checks_kind_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    write_json_atomic(path, provenance("model", 1))
    assert read_manifest(path, "model", 1)["kind"] == "model"
    with pytest.raises(InputError, match="not a protomatch index"):
        read_manifest(path, "index", 1)
    write_json_atomic(path, {**provenance("model", 1), "schema_version": 3})
    with pytest.raises(InputError, match="newer"):
        read_manifest(path, "model", 2)
    path.write_text("{broken")
    with pytest.raises(InputError, match="not valid JSON"):
        read_manifest(path, "model", 1)


def test_provenance_names_the_tool_and_version() -> None:
    record = provenance("library-store", 1)
    assert record["protomatch_version"] and record["created_utc"]
    assert json.loads(json.dumps(record)) == record


def test_temporary_names_carry_the_writing_process_id(tmp_path: Path) -> None:
    with atomic_directory(tmp_path / "out") as folder, atomic_path(tmp_path / "f.json") as file:
        assert folder.name.startswith(f".out.pid{os.getpid()}.")
        assert file.name.startswith(f".f.json.pid{os.getpid()}.")


def test_only_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(finished.stdout)
    stale = tmp_path / f".out.pid{dead}.ab12_x.tmp"
    (stale / "inner").mkdir(parents=True)
    stale_file = tmp_path / f".out.pid{dead}.cd34.tmp"
    stale_file.write_text("half")
    kept = [
        tmp_path / f".out.pid{os.getpid()}.ef56.tmp",  # a live process's (this one)
        tmp_path / f".out.pid{os.getppid()}.gh78.tmp",  # another live process's
        tmp_path / ".out.ij90.tmp",  # no pid: cannot be proven stale
        tmp_path / f".other.pid{dead}.kl12.tmp",  # another output's
    ]
    for path in kept:
        path.mkdir()
    assert sorted(remove_stale_temporaries(tmp_path, "out")) == sorted([stale, stale_file])
    assert sorted(tmp_path.iterdir()) == sorted(kept)
