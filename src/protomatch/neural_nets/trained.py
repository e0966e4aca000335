"""The model artefact (model.safetensors + model.json) and training checkpoints.

Weights are stored with safetensors and everything else as JSON, so loading a model never
executes code from the file. ``model.json`` says how to rebuild the network (architecture),
how images were prepared (preprocessing), which parameters it compares and how they were
normalised, what it scored, and on which library it was trained (fingerprint).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from protomatch._artefact import (
    atomic_path,
    fingerprint_bytes,
    provenance,
    read_manifest,
    write_json_atomic,
)
from protomatch.errors import InputError, ProtomatchError
from protomatch.library.params import ParameterNormaliser
from protomatch.library.preprocess import PreprocessConfig, intensity_transform
from protomatch.neural_nets.networks import EncoderConfig, SiameseNetwork

MODEL_SCHEMA_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "model.json"


@dataclass(frozen=True)
class TrainedModel:
    """A trained Siamese network with everything needed to use it on new images."""

    network: SiameseNetwork
    encoder_config: EncoderConfig
    preprocess: PreprocessConfig
    normaliser: ParameterNormaliser
    weights: tuple[float, ...]
    manifest: Mapping[str, Any]
    brightness: ParameterNormaliser | None = None

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def library_fingerprint(self) -> str:
        return str(self.manifest["library"]["fingerprint"])

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @torch.no_grad()
    def embed(
        self,
        images: np.ndarray | torch.Tensor,
        mean_intensity: np.ndarray | None = None,
        batch_size: int = 256,
    ) -> np.ndarray:
        """L2-normalised embeddings (N, D) float32 of prepared linear images (N, H, W).

        ``mean_intensity`` (N,) is each image's mean in the library's intensity unit (the
        store's ``mean_intensity`` column); models trained with brightness need it.
        """
        self.network.eval()
        scalars = self.brightness_features(mean_intensity, len(images))
        chunks = []
        for start in range(0, len(images), batch_size):
            stop = start + batch_size
            batch = torch.as_tensor(np.array(images[start:stop], dtype=np.float32))
            batch = intensity_transform(batch.to(self.device), self.preprocess)
            extra = None if scalars is None else scalars[start:stop].to(self.device)
            chunks.append(self.network.embed(batch.unsqueeze(1), extra).float().cpu().numpy())
        if not chunks:
            return np.zeros((0, self.encoder_config.embedding_dim), dtype=np.float32)
        return np.concatenate(chunks)

    def compared_brightness(self, mean_intensity: float | None) -> float | None:
        """The mean intensity to give the network for one target.

        None for models that do not compare brightness; the target's own value when known
        and positive; otherwise the training library's typical (geometric mean) brightness.
        """
        if self.brightness is None:
            return None
        if mean_intensity is not None and mean_intensity > 0:
            return float(mean_intensity)
        return float(10 ** self.brightness.centre[0])

    def brightness_features(self, mean_intensity: np.ndarray | None, n: int) -> torch.Tensor | None:
        """Normalised log brightness (n, 1) for the network, or None if it takes none."""
        if self.brightness is None:
            return None
        if mean_intensity is None:
            raise ProtomatchError(
                "this model compares brightness: give each image's mean intensity"
            )
        values = np.asarray(mean_intensity, dtype=np.float64).reshape(n, 1)
        if not (values > 0).all():
            raise ProtomatchError("mean intensities must be positive to compare brightness")
        return torch.from_numpy(self.brightness.transform(values).astype(np.float32))


def save_model(out: Path, network: SiameseNetwork, manifest: Mapping[str, Any]) -> None:
    """Write weights and manifest atomically; the manifest gains kind, version and fingerprint."""
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    payload = {**provenance("model", MODEL_SCHEMA_VERSION), **manifest}
    payload["fingerprint"] = _weights_fingerprint(out / WEIGHTS_FILE)
    write_json_atomic(out / MANIFEST_FILE, payload)


def update_model_manifest(out: Path, fields: Mapping[str, Any]) -> None:
    """Replace top-level ``fields`` of an existing model.json (weights untouched)."""
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    manifest.update(fields)
    write_json_atomic(out / MANIFEST_FILE, manifest)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> TrainedModel:
    """Load a model folder (or its model.json) without executing anything from the files."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    manifest = read_manifest(folder / MANIFEST_FILE, "model", MODEL_SCHEMA_VERSION)
    try:
        encoder_config = EncoderConfig(**manifest["architecture"])
        preprocess = PreprocessConfig(**manifest["preprocessing"])
        normaliser = ParameterNormaliser.from_dict(manifest["parameters"]["normalisation"])
        weights = tuple(float(w) for w in manifest["parameters"]["weights"])
        brightness = manifest.get("brightness")
        brightness = None if brightness is None else ParameterNormaliser.from_dict(brightness)
    except (KeyError, TypeError, ValidationError) as exc:
        message = str(exc).splitlines()[0]
        raise InputError(folder / MANIFEST_FILE, f"incomplete model manifest ({message})") from None
    network = SiameseNetwork.from_config(encoder_config)
    state = load_tensors(folder / WEIGHTS_FILE)
    try:
        network.load_state_dict(state)
    except RuntimeError:
        raise InputError(
            folder / WEIGHTS_FILE, "weights do not fit the architecture in model.json"
        ) from None
    network.to(device).eval()
    return TrainedModel(
        network, encoder_config, preprocess, normaliser, weights, manifest, brightness
    )


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, with a one-line error for a missing or corrupt file."""
    if not path.is_file():
        raise InputError(path, "missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(path, f"is not a readable safetensors file ({exc})") from None


def _weights_fingerprint(path: Path) -> str:
    return fingerprint_bytes([path.read_bytes()])


# --- checkpoints: model + optimiser + scheduler + progress, for an exact --resume ----------


def save_checkpoint(
    folder: Path,
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: Mapping[str, Any],
) -> None:
    """Write ``last.safetensors`` (model and optimiser tensors) and ``last.json``, atomically.

    The JSON is written last, so a checkpoint is only ever read when both files are whole.
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for param_id, slots in optimizer_state["state"].items():
        for slot, value in slots.items():
            tensors[f"optim.{param_id}.{slot}"] = torch.as_tensor(value).detach().cpu().clone()
    with atomic_path(folder / "last.safetensors") as tmp:
        save_file(tensors, str(tmp))
    meta = {"param_groups": optimizer_state["param_groups"], "progress": dict(progress)}
    write_json_atomic(folder / "last.json", meta)


def load_checkpoint(
    folder: Path, network: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore model and optimiser from ``folder``; return the saved progress record."""
    meta_path = folder / "last.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(meta_path, f"is not a readable checkpoint record ({exc})") from None
    tensors = load_tensors(folder / "last.safetensors")
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, param_id, slot = key.split(".", 2)
            state.setdefault(int(param_id), {})[slot] = value
    try:
        network.load_state_dict(model_state)
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (RuntimeError, KeyError, ValueError) as exc:
        message = str(exc).splitlines()[0]
        raise InputError(
            folder, f"checkpoint does not fit this configuration ({message})"
        ) from None
    return meta["progress"]
