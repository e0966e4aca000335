from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from protomatch.errors import InputError, ProtomatchError
from protomatch.library.store import LibraryStore
from protomatch.neural_nets.trained import load_model, save_checkpoint
from protomatch.training.config import load_config
from protomatch.training.engine import train_model
from protomatch.training.losses import ContrastiveLoss
from tests.conftest import tiny_training_overrides


def _train(store: Path, out: Path, **extra):
    return train_model(store, out, config=load_config(None, tiny_training_overrides(**extra)))


def test_training_lowers_the_loss(tiny_store: Path, tmp_path: Path) -> None:
    result = _train(tiny_store, tmp_path / "m", epochs=5, **{"pairs.pairs_per_epoch": 512})
    losses = [row["train_loss"] for row in result.history]
    assert min(losses[1:]) < losses[0]
    assert result.val_mse_trivial > 0


def test_model_artefact_describes_itself(tiny_model: Path, tiny_store: Path) -> None:
    manifest = json.loads((tiny_model / "model.json").read_text())
    assert manifest["kind"] == "model" and manifest["protomatch_version"]
    assert manifest["architecture"]["channels"] == [8, 16]
    assert manifest["preprocessing"]["size"] == 32
    assert manifest["parameters"]["names"][0] == "Envelope_mass"
    assert "normalisation" in manifest["parameters"]
    store_manifest = json.loads((tiny_store / "manifest.json").read_text())
    assert manifest["library"]["fingerprint"] == store_manifest["fingerprint"]
    assert manifest["metrics"]["epochs_run"] == 3
    assert manifest["config"]["epochs"] == 3
    for name in ("metrics.csv", "training_curve.png", "model.safetensors"):
        assert (tiny_model / name).stat().st_size > 0
    trained = load_model(tiny_model)
    assert trained.brightness is not None and manifest["brightness"]["names"] == ["mean_intensity"]
    assert trained.embed(torch.zeros(2, 32, 32).numpy(), np.ones(2)).shape == (2, 16)


def test_same_seed_gives_the_same_metrics(tiny_store: Path, tmp_path: Path) -> None:
    _train(tiny_store, tmp_path / "a", epochs=2)
    _train(tiny_store, tmp_path / "b", epochs=2)
    _train(tiny_store, tmp_path / "c", epochs=2, seed=5)
    a, b, c = ((tmp_path / n / "metrics.csv").read_text() for n in "abc")
    strip = lambda text: [line.rsplit(",", 1)[0] for line in text.splitlines()]  # noqa: E731
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


def test_interrupted_run_resumes_to_the_same_result(tiny_store: Path, tmp_path: Path) -> None:
    config = load_config(None, tiny_training_overrides(epochs=4))
    reference = train_model(tiny_store, tmp_path / "whole", config=config)

    def interrupt(epoch: int, row: object) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(tiny_store, tmp_path / "cut", config=config, on_epoch_end=interrupt)
    resumed = train_model(tiny_store, tmp_path / "cut", config=config, resume=True)
    assert resumed.epochs_run == reference.epochs_run == 4
    assert [r["val_loss"] for r in resumed.history] == pytest.approx(
        [r["val_loss"] for r in reference.history], rel=1e-5
    )
    assert load_model(tmp_path / "cut").manifest["metrics"]["best_epoch"] == reference.best_epoch


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    network = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(network.parameters())
    save_checkpoint(tmp_path, network, optimizer, {"epoch": 1})
    before = (tmp_path / "last.safetensors").read_bytes()

    def broken_save(tensors, filename):  # writes half a file, then fails
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("protomatch.neural_nets.trained.save_file", broken_save)
    with torch.no_grad():
        network.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, network, optimizer, {"epoch": 2})
    assert (tmp_path / "last.safetensors").read_bytes() == before
    assert json.loads((tmp_path / "last.json").read_text())["progress"]["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]


def test_contrastive_loss_is_the_configured_one() -> None:
    config = load_config(None, {"margin": 0.3})
    assert config.loss == "contrastive"
    loss = ContrastiveLoss(margin=config.margin)
    # pred = 0, truth = -1: d = 0.5, t = 0 -> ½ max(0.3 - 0.5, 0)² = 0
    assert loss(torch.tensor([0.0]), torch.tensor([-1.0])).total.item() == pytest.approx(0.0)


def test_unknown_config_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("epochs: 2\nlearning_rat: 0.1\n")
    with pytest.raises(ProtomatchError, match="learning_rat"):
        load_config(path)


def test_input_size_the_architecture_cannot_take(tiny_store: Path, tmp_path: Path) -> None:
    with pytest.raises(ProtomatchError, match="input_size"):
        _train(tiny_store, tmp_path / "m", **{"encoder.channels": [4, 4, 4, 4, 4]})
    assert not (tmp_path / "m").exists()


def test_corrupted_checkpoint_is_a_clear_error(tiny_model: Path, tiny_store: Path, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_model, copy)
    (copy / "checkpoints" / "last.safetensors").write_bytes(b"\x00garbage" * 10)
    config = load_config(None, tiny_training_overrides())
    with pytest.raises(InputError, match=r"last\.safetensors"):
        train_model(tiny_store, copy, config=config, resume=True)


def test_model_of_a_newer_schema_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_model, copy)
    manifest = json.loads((copy / "model.json").read_text())
    manifest["schema_version"] = 99
    (copy / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="newer"):
        load_model(copy)


def test_cli_reports_a_bad_config_in_one_line(tiny_store: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("epochs: -1\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "protomatch",
            "train",
            str(tiny_store),
            "-o",
            str(tmp_path / "m"),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"protomatch: error: {config}: invalid training config: epochs: "
        "Input should be greater than or equal to 1"
    ]
    assert not (tmp_path / "m").exists()


def test_pretrained_frozen_encoder_stays_fixed(tiny_store: Path, tmp_path: Path) -> None:
    from protomatch.training.engine import _Run

    config = load_config(
        None, tiny_training_overrides(epochs=2, pretrain_epochs=1, freeze_encoder=True)
    )
    run = _Run.prepare(LibraryStore.open(tiny_store), config, tmp_path)
    run._pretrain()
    frozen = {k: v.clone() for k, v in run.network.encoder.features.state_dict().items()}
    assert not any(p.requires_grad for p in run.network.encoder.features.parameters())
    result = train_model(tiny_store, tmp_path / "m", config=config)
    assert result.epochs_run == 2
    trained = load_model(tmp_path / "m")
    # the same seed gives the same autoencoder, and freezing kept its conv stages unchanged
    for key, value in trained.network.encoder.features.state_dict().items():
        assert torch.equal(value, frozen[key]), key


def test_early_stopping_ends_a_run_without_improvement(tiny_store: Path, tmp_path: Path) -> None:
    result = _train(
        tiny_store, tmp_path / "m", epochs=8, **{"optim.patience": 1, "optim.min_delta": 10.0}
    )
    # epoch 1 sets the best; epoch 2 fails to improve by 10 and the run stops
    assert result.epochs_run == 2 and result.best_epoch == 1


def test_tensorboard_logs_when_asked(tiny_store: Path, tmp_path: Path) -> None:
    _train(tiny_store, tmp_path / "m", epochs=1, tensorboard=True)
    assert list((tmp_path / "m" / "tensorboard").glob("events.out.tfevents.*"))


def test_training_without_brightness_uses_images_only(tiny_store: Path, tmp_path: Path) -> None:
    _train(tiny_store, tmp_path / "m", epochs=1, brightness=False)
    trained = load_model(tmp_path / "m")
    assert trained.brightness is None and trained.encoder_config.scalar_inputs == 0
    assert trained.embed(np.zeros((2, 32, 32), dtype=np.float32)).shape == (2, 16)
