"""Crash safety of training: incomplete models are marked, resumes are checked, --overwrite
starts clean, and a run killed by its pid is refused by `index` until it is resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protomatch.errors import InputError, ProtomatchError
from protomatch.library.ingest import IngestConfig, ingest_library
from protomatch.neural_nets.trained import load_model
from protomatch.training.config import load_config
from protomatch.training.engine import train_model
from protomatch.training.resume import run_record
from tests.conftest import tiny_training_overrides
from tests.processes import kill, needs_proc, run_protomatch, start_protomatch, wait_for


@pytest.fixture(scope="module")
def other_store(tiny_library: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny library ingested with another stretch: another store fingerprint."""
    out = tmp_path_factory.mktemp("other-store") / "store"
    ingest_library(tiny_library, out, config=IngestConfig(size=32, stretch="asinh"), workers=1)
    return out


def _config(**extra: object):
    return load_config(None, tiny_training_overrides(**extra))


def _interrupt_after(stop: int):
    def interrupt(epoch: int, row: object) -> None:
        if epoch == stop:
            raise KeyboardInterrupt

    return interrupt


@pytest.fixture
def interrupted(tiny_store: Path, tmp_path: Path) -> Path:
    """A model folder whose 3-epoch run stopped after epoch 2."""
    out = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt):
        train_model(tiny_store, out, config=_config(), on_epoch_end=_interrupt_after(2))
    return out


def _manifest(model: Path) -> dict:
    return json.loads((model / "model.json").read_text())


def test_an_unfinished_model_is_refused_until_resumed(interrupted: Path, tiny_store: Path):
    assert _manifest(interrupted)["complete"] is False
    with pytest.raises(InputError, match=r"unfinished training run.*--resume"):
        load_model(interrupted)
    train_model(tiny_store, interrupted, resume=True)
    assert _manifest(interrupted)["complete"] is True
    assert load_model(interrupted).manifest["metrics"]["epochs_run"] == 3


def test_a_checkpoint_without_a_model_yet_is_refused(interrupted: Path) -> None:
    (interrupted / "model.json").unlink()
    with pytest.raises(InputError, match="unfinished training run"):
        load_model(interrupted)


def test_a_new_run_into_an_unfinished_one_names_both_ways(interrupted: Path, tiny_store: Path):
    with pytest.raises(InputError, match="--resume, or replace it with --overwrite"):
        train_model(tiny_store, interrupted, config=_config())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 3}, "seed 3 differs from the run's 0"),
        ({"optim.learning_rate": 0.01}, "optim.learning_rate 0.01 differs from the run's 0.001"),
        (
            {"encoder.channels": [8, 8]},
            r"encoder.channels \[8, 8\] differs from the run's \[8, 16\]",
        ),
    ],
)
def test_resume_refuses_another_setting_naming_it(
    interrupted: Path, tiny_store: Path, change: dict, message: str
) -> None:
    with pytest.raises(ProtomatchError, match=rf"^--resume: {message}\. .*--allow-changed"):
        train_model(tiny_store, interrupted, config=_config(**change), resume=True)


def test_resume_refuses_another_library_store(
    interrupted: Path, tiny_store: Path, other_store: Path
) -> None:
    with pytest.raises(ProtomatchError, match=r"the library store .* differs from the run's"):
        train_model(other_store, interrupted, resume=True)


def test_an_allowed_change_is_made_and_recorded(interrupted: Path, tiny_store: Path) -> None:
    result = train_model(
        tiny_store, interrupted, config=_config(epochs=4), resume=True, allow_changed=["epochs"]
    )
    assert result.epochs_run == 4
    manifest = _manifest(interrupted)
    assert manifest["config"]["epochs"] == 4
    assert manifest["changed_on_resume"] == [
        {"after_epoch": 2, "setting": "epochs", "from": 3, "to": 4}
    ]
    assert run_record(interrupted)["changes"] == manifest["changed_on_resume"]


def test_settings_that_do_not_change_learning_need_no_override(
    interrupted: Path, tiny_store: Path
) -> None:
    train_model(tiny_store, interrupted, config=_config(checkpoint_every=2), resume=True)
    assert _manifest(interrupted)["changed_on_resume"] == []


def test_an_unknown_allowed_setting_is_refused(interrupted: Path, tiny_store: Path) -> None:
    with pytest.raises(ProtomatchError, match="--allow-changed: no setting 'sed'"):
        train_model(tiny_store, interrupted, resume=True, allow_changed=["sed"])


def test_overwrite_starts_clean(interrupted: Path, tiny_store: Path, other_store: Path) -> None:
    (interrupted / "notes.txt").write_text("from the old run")
    with pytest.raises(KeyboardInterrupt):
        train_model(
            other_store,
            interrupted,
            config=_config(),
            overwrite=True,
            on_epoch_end=_interrupt_after(1),
        )
    assert not (interrupted / "notes.txt").exists()
    assert (
        json.loads((interrupted / "checkpoints" / "last.json").read_text())["progress"]["epoch"]
        == 1
    )
    with pytest.raises(ProtomatchError, match="the library store"):
        train_model(tiny_store, interrupted, resume=True)  # the old run is gone


_TINY = [f"--set={key}={json.dumps(value)}" for key, value in tiny_training_overrides().items()]


@needs_proc
@pytest.mark.slow
def test_a_killed_training_run_is_locked_refused_then_resumed(
    tiny_store: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    long = ("--epochs", 500, "--set", "optim.patience=500")  # killed long before its end
    train = start_protomatch("train", tiny_store, "-o", model, *_TINY, *long)
    try:
        checkpoint = model / "checkpoints" / "last.json"
        wait_for(checkpoint.is_file, 120, "the first checkpoint")
        second = run_protomatch("train", tiny_store, "-o", model, *_TINY, "--overwrite")
        assert train.poll() is None, "the run ended before the second tried"
        assert second.returncode == 2
        assert f"is in use by another protomatch run (pid {train.pid})" in second.stderr
    finally:
        kill(train)
    index = run_protomatch("index", model, tiny_store, "-o", tmp_path / "index")
    assert index.returncode == 2 and len(index.stderr.splitlines()) == 1
    assert "unfinished training run" in index.stderr and "--resume" in index.stderr
    stopped = json.loads(checkpoint.read_text())["progress"]["epoch"]
    more = ("--epochs", stopped + 1, "--allow-changed", "epochs")
    resumed = run_protomatch("train", tiny_store, "-o", model, "--resume", *more)
    assert resumed.returncode == 0, resumed.stderr
    assert _manifest(model)["changed_on_resume"][0]["to"] == stopped + 1
    assert load_model(model).manifest["metrics"]["epochs_run"] == stopped + 1


def test_an_unreadable_checkpoint_record_is_one_line(tmp_path: Path) -> None:
    record = tmp_path / "checkpoints" / "last.json"
    record.parent.mkdir()
    record.write_text('{"progress": ' + "9" * 5000 + "}")
    with pytest.raises(InputError, match=r"last\.json: is not valid JSON"):
        run_record(tmp_path)
