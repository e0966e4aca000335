"""The model artefact (model.safetensors + model.json) and training checkpoints.

Weights are stored with safetensors and everything else as JSON, so loading a model never
executes code from the file. ``model.json`` says how to rebuild the network (architecture),
how images were prepared (preprocessing), which parameters it compares and how they were
normalised, what it scored, and on which library it was trained (fingerprint).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from protomatch._artefact import atomic_path, provenance, read_json, write_json_atomic
from protomatch._integrity import corrupted, file_record, read_checked
from protomatch._manifests import CheckpointRecord, ModelManifest, load_manifest
from protomatch.errors import InputError, ProtomatchError
from protomatch.library.params import ParameterNormaliser
from protomatch.library.preprocess import PreprocessConfig, intensity_transform
from protomatch.neural_nets.encoder import EncoderConfig
from protomatch.neural_nets.siamese import SiameseNetwork

if TYPE_CHECKING:
    from protomatch.library.store import LibraryStore

MODEL_SCHEMA_VERSION = ModelManifest.SCHEMA_VERSION
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "model.json"


@dataclass(frozen=True)
class TrainedModel:
    """A trained Siamese network with everything needed to use it on new images.

    Attributes
    ----------
    network
        The network, in eval mode.
    encoder_config
        Its architecture.
    preprocess
        How its images were prepared (size, crop, stretch).
    normaliser
        The parameter normalisation of its similarity labels.
    weights
        Weight of each parameter in the labels.
    manifest
        The parsed ``model.json``.
    brightness
        Normalisation of the log mean intensity it compares (None: images only).
    """

    network: SiameseNetwork
    encoder_config: EncoderConfig
    preprocess: PreprocessConfig
    normaliser: ParameterNormaliser
    weights: tuple[float, ...]
    manifest: Mapping[str, Any]
    brightness: ParameterNormaliser | None = None

    @property
    def fingerprint(self) -> str:
        """Content hash of the weights (16 hex digits)."""
        return str(self.manifest["fingerprint"])

    @property
    def library_fingerprint(self) -> str:
        """Fingerprint of the library store the model was trained on."""
        return str(self.manifest["library"]["fingerprint"])

    @property
    def device(self) -> torch.device:
        """The device the network's weights are on."""
        return next(self.network.parameters()).device

    def check_store(self, store: LibraryStore) -> None:
        """Refuse a library store this model cannot embed or describe.

        Parameters
        ----------
        store
            An opened library store.

        Raises
        ------
        InputError
            Naming the store folder, if its images are not of the model's input size
            (pixels) or it lacks one of the physical parameters the model compares.
        """
        size = self.encoder_config.input_size
        side = store.images.shape[-1]
        if side != size:
            raise InputError(
                store.path,
                f"holds {side} px images but the model takes {size} px; "
                f"ingest the library with --size {size}",
            )
        missing = [name for name in self.normaliser.names if name not in store.param_names]
        if missing:
            raise InputError(store.path, f"lacks the model's parameter(s) {', '.join(missing)}")

    @torch.no_grad()
    def embed(
        self,
        images: np.ndarray | torch.Tensor,
        mean_intensity: np.ndarray | None = None,
        batch_size: int = 256,
    ) -> np.ndarray:
        """L2-normalised embeddings of prepared images.

        Parameters
        ----------
        images
            (N, H, W) linear images after the geometry stage (e.g. a store's images).
        mean_intensity
            (N,) each image's mean in the library's intensity unit (the store's
            ``mean_intensity`` column); models trained with brightness need it.
        batch_size
            Images per forward pass.

        Returns
        -------
        numpy.ndarray
            (N, D) float32 unit-length embeddings.
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

        Parameters
        ----------
        mean_intensity
            The target's mean intensity in the library's unit, if known.

        Returns
        -------
        float or None
            None for models that do not compare brightness; the target's own value when
            known and positive; otherwise the training library's typical (geometric mean)
            brightness.
        """
        if self.brightness is None:
            return None
        if mean_intensity is not None and mean_intensity > 0:
            return float(mean_intensity)
        return float(10 ** self.brightness.centre[0])

    def brightness_features(self, mean_intensity: np.ndarray | None, n: int) -> torch.Tensor | None:
        """The brightness features the network takes.

        Parameters
        ----------
        mean_intensity
            (n,) positive mean intensities in the library's unit.
        n
            Number of images.

        Returns
        -------
        torch.Tensor or None
            (n, 1) float32 normalised log10 brightness; None if the model takes none.

        Raises
        ------
        ProtomatchError
            If the model compares brightness and the intensities are missing or not positive.
        """
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
    """Write a model folder's weights and manifest atomically.

    Parameters
    ----------
    out
        The model folder.
    network
        The network whose weights to write (``model.safetensors``).
    manifest
        The ``model.json`` fields; kind, version and the weights' fingerprint are added.
    """
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    payload = {**provenance("model", MODEL_SCHEMA_VERSION), **manifest}
    record = file_record(out / WEIGHTS_FILE)
    payload["fingerprint"] = record["sha256"][:16]
    payload["files"] = {WEIGHTS_FILE: record}
    write_json_atomic(out / MANIFEST_FILE, payload)


def update_model_manifest(out: Path, fields: Mapping[str, Any]) -> None:
    """Replace top-level fields of an existing ``model.json`` (weights untouched).

    Parameters
    ----------
    out
        The model folder.
    fields
        The fields to set.
    """
    manifest = read_json(out / MANIFEST_FILE)
    manifest.update(fields)
    write_json_atomic(out / MANIFEST_FILE, manifest)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> TrainedModel:
    """Load a model without executing anything from its files.

    Parameters
    ----------
    path
        The model folder (or its ``model.json``).
    device
        Where to put the network.

    Returns
    -------
    TrainedModel
        The network in eval mode with its preprocessing and normalisations.

    Raises
    ------
    InputError
        For a missing, incomplete or newer manifest, weights that do not fit it, or an
        unfinished training run.
    """
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if not (folder / MANIFEST_FILE).is_file():
        _refuse_unfinished(folder, None)
    manifest = load_manifest(folder / MANIFEST_FILE, ModelManifest)
    _refuse_unfinished(folder, manifest)
    try:
        normaliser = ParameterNormaliser.from_dict(manifest.parameters.normalisation.model_dump())
        brightness = None
        if manifest.brightness is not None:
            brightness = ParameterNormaliser.from_dict(manifest.brightness.model_dump())
    except ProtomatchError as exc:
        raise InputError(folder / MANIFEST_FILE, f"bad field parameters: {exc}") from None
    state = _read_weights(folder / WEIGHTS_FILE, manifest)
    network = _network_for(manifest.architecture, state, folder / WEIGHTS_FILE)
    network.to(device).eval()
    weights = tuple(manifest.parameters.weights)
    return TrainedModel(
        network,
        manifest.architecture,
        manifest.preprocessing,
        normaliser,
        weights,
        manifest.as_dict(),
        brightness,
    )


def _refuse_unfinished(folder: Path, manifest: ModelManifest | None) -> None:
    """Refuse a model folder whose training has not finished (killed, or still running).

    Its model.json says ``"complete": false`` (one written before that field existed is
    taken as complete), or there is a checkpoint but no model.json yet.
    """
    if manifest is not None:
        unfinished = manifest.as_dict().get("complete") is False
    else:
        unfinished = (folder / "checkpoints" / "last.json").is_file()
    if unfinished:
        raise InputError(
            folder,
            "is an unfinished training run (killed or still running); finish it with "
            f"protomatch train STORE -o {folder} --resume",
        )


def _read_weights(path: Path, manifest: ModelManifest) -> dict[str, torch.Tensor]:
    """The weights, checked against the manifest's SHA-256 (older models: the fingerprint)."""
    data = read_checked(path, manifest.files)
    record = None if manifest.files is None else manifest.files.get(path.name)
    # read_checked has hashed the bytes against the record; only older models are hashed here
    digest = hashlib.sha256(data).hexdigest() if record is None else record.sha256
    if digest[:16] != manifest.fingerprint:
        raise corrupted(path, f"does not match the model's fingerprint {manifest.fingerprint}")
    return _tensors(path, data)


def _network_for(
    config: EncoderConfig, state: Mapping[str, torch.Tensor], path: Path
) -> SiameseNetwork:
    """The network of ``config`` holding ``state``; its shapes are compared before allocating."""
    try:
        with torch.device("meta"):
            skeleton = SiameseNetwork.from_config(config)
    except (ProtomatchError, TypeError, ValueError, RuntimeError, OverflowError) as exc:
        problem = str(exc).strip().splitlines()[0][:200]
        raise InputError(
            path.parent / MANIFEST_FILE, f"architecture cannot be built ({problem})"
        ) from None
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    if expected != {name: tuple(t.shape) for name, t in state.items()}:
        raise InputError(path, "weights do not fit the architecture in model.json")
    network = SiameseNetwork.from_config(config)
    network.load_state_dict(state)
    return network


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read the tensors of a safetensors file.

    Parameters
    ----------
    path
        The ``.safetensors`` file.

    Returns
    -------
    dict
        Tensor name → tensor (on the CPU).

    Raises
    ------
    InputError
        One line, for a missing or corrupt file.
    """
    return _tensors(path, read_checked(path, None))


def _tensors(path: Path, data: bytes) -> dict[str, torch.Tensor]:
    """The tensors of ``path``'s bytes ``data``, or one InputError line."""
    try:
        return load(data)
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(path, f"is not a readable safetensors file ({exc})") from None


# --- checkpoints: model + optimiser + scheduler + progress, for an exact --resume ----------


def save_checkpoint(
    folder: Path,
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: Mapping[str, Any],
) -> None:
    """Write ``last.safetensors`` (model and optimiser tensors) and ``last.json``, atomically.

    The JSON is written last, so a checkpoint is only ever read when both files are whole.

    Parameters
    ----------
    folder
        The checkpoint folder.
    network
        The model being trained.
    optimizer
        Its optimiser (tensors go to safetensors, param groups to JSON).
    progress
        JSON-serialisable training progress (epoch, best loss, history, scheduler ...).
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for param_id, slots in optimizer_state["state"].items():
        for slot, value in slots.items():
            tensors[f"optim.{param_id}.{slot}"] = torch.as_tensor(value).detach().cpu().clone()
    with atomic_path(folder / "last.safetensors") as tmp:
        save_file(tensors, str(tmp))
    meta = {
        "param_groups": optimizer_state["param_groups"],
        "progress": dict(progress),
        "files": {"last.safetensors": file_record(folder / "last.safetensors")},
    }
    write_json_atomic(folder / "last.json", meta)


def load_checkpoint(
    folder: Path, network: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore model and optimiser from a checkpoint folder.

    Parameters
    ----------
    folder
        The folder :func:`save_checkpoint` wrote.
    network
        The model to load into (same architecture).
    optimizer
        The optimiser to load into (same parameter groups).

    Returns
    -------
    dict
        The saved progress record.

    Raises
    ------
    InputError
        For an unreadable checkpoint or one that does not fit this configuration.
    """
    meta = load_manifest(folder / "last.json", CheckpointRecord)
    tensors = _tensors(
        folder / "last.safetensors", read_checked(folder / "last.safetensors", meta.files)
    )
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, param_id, slot = key.split(".", 2)
            state.setdefault(int(param_id), {})[slot] = value
    try:
        network.load_state_dict(model_state)
        groups = [group.model_dump() for group in meta.param_groups]
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        message = str(exc).splitlines()[0]
        raise InputError(
            folder, f"checkpoint does not fit this configuration ({message})"
        ) from None
    return dict(meta.progress)
