"""One validated model per manifest kind, so a wrong or missing field is one line.

Every artefact folder has a JSON manifest (``manifest.json``, ``model.json``,
``index.json``, ``metrics.json`` ...). :func:`load_manifest` reads one through the pydantic
model of its kind: the fields protomatch reads are typed and checked (strict types, so a
string ``au_per_pixel`` is refused, not converted); fields it only records are kept as they
are (``extra="allow"``: a manifest is a record of what made the artefact, and a newer minor
release may add a field an older reader does not need). A problem becomes one
:class:`~protomatch.errors.InputError` naming the file and the field.

Since schema version 2 of stores, models and indexes, ``files`` holds the SHA-256 and size of
every data file of the artefact; see :mod:`protomatch._integrity`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    StringConstraints,
    ValidationError,
    model_validator,
)

from protomatch._artefact import read_json, read_manifest
from protomatch.errors import InputError, validation_message
from protomatch.library.preprocess import PreprocessConfig
from protomatch.neural_nets.encoder import EncoderConfig

__all__ = [
    "BY_KIND",
    "CalibrationManifest",
    "CheckpointRecord",
    "EvaluationManifest",
    "FileRecord",
    "ImageBlocks",
    "IndexManifest",
    "Manifest",
    "ModelManifest",
    "ReportManifest",
    "StoreManifest",
    "load_manifest",
]

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
#: A float that may be NaN (statistics of too small a library are recorded as NaN).
StatFloat = Annotated[float, Field(allow_inf_nan=True)]


class _Record(BaseModel):
    """A JSON object of a manifest: typed where read, other fields kept."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class ImageBlocks(_Record):
    """SHA-256 of consecutive blocks of images, so reading a few images checks only them.

    Block ``b`` holds images ``b * images_per_block`` up to the next block's first (the
    last block may be shorter), as little-endian float32 bytes in row-major order.
    """

    # bounded so that block offsets stay within numpy's 64-bit indices
    images_per_block: Annotated[int, Field(ge=1, le=2**31)]
    sha256: list[Sha256]


class FileRecord(_Record):
    """The content hash and size of one file of an artefact."""

    sha256: Sha256
    bytes: NonNegativeInt
    blocks: ImageBlocks | None = None


class Manifest(_Record):
    """The fields every manifest starts with (see :func:`protomatch._artefact.provenance`).

    Subclasses set ``KIND`` and ``SCHEMA_VERSION`` (the newest layout this version reads);
    ``CHECKSUMS_SINCE`` is the first schema version that records ``files``.
    """

    KIND: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1
    CHECKSUMS_SINCE: ClassVar[int | None] = None

    kind: str
    schema_version: PositiveInt
    protomatch_version: str | None = None
    created_utc: str | None = None
    command: str | None = None
    files: dict[str, FileRecord] | None = None

    @model_validator(mode="after")
    def _check_file_names(self) -> Manifest:
        for name in self.files or {}:
            parts = PurePosixPath(name).parts
            if not parts or name.startswith("/") or ".." in parts or "\\" in name:
                raise ValueError(f"files: {name!r} is not a path inside the artefact folder")
        return self

    @model_validator(mode="after")
    def _check_files_recorded(self) -> Manifest:
        since = self.CHECKSUMS_SINCE
        if since is not None and self.schema_version >= since and self.files is None:
            raise ValueError(
                f"files: missing (schema version {self.schema_version} records a checksum "
                "of every file)"
            )
        return self

    @property
    def has_checksums(self) -> bool:
        """Whether the manifest records the content hash of the artefact's files."""
        return self.files is not None

    def as_dict(self) -> dict[str, Any]:
        """The manifest as plain data: checked fields (defaults filled in) and the rest."""
        return self.model_dump()


class ArtefactRef(_Record):
    """Another artefact this one was made from or with: its fingerprint and folder."""

    fingerprint: str
    path: str | None = None


class _FolderRef(ArtefactRef):
    path: str


class _ScaleFact(_Record):
    value: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    source: str
    field_au: FiniteFloat


class _UnitFact(_Record):
    value: str
    source: str


class _StoreParameter(_Record):
    unit: str = ""
    source: str = ""
    log: bool | None = None


class _StoreDescription(_Record):
    """What a store knows about its library and where each fact came from."""

    au_per_pixel: _ScaleFact | None = None
    intensity_unit: _UnitFact | None = None
    parameters: dict[str, _StoreParameter] = {}
    unrecognised_attributes: list[str] = []
    description_file: str | None = None


class StoreManifest(Manifest):
    """``manifest.json`` of a library store (:mod:`protomatch.library.store`)."""

    KIND: ClassVar[str] = "library-store"
    SCHEMA_VERSION: ClassVar[int] = 2
    CHECKSUMS_SINCE: ClassVar[int | None] = 2

    kind: Literal["library-store"]
    preprocess: PreprocessConfig
    parameters: list[str]
    units: dict[str, str] = {}
    image_shape: Annotated[list[NonNegativeInt], Field(min_length=3, max_length=3)]
    au_per_pixel: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    intensity_unit: str | None = None
    description: _StoreDescription | None = None
    counts: dict[str, NonNegativeInt] = {}
    fingerprint: str

    @model_validator(mode="after")
    def _check_square(self) -> StoreManifest:
        if self.image_shape[1] != self.image_shape[2]:
            raise ValueError(f"image_shape: images must be square, got {self.image_shape}")
        return self


class NormalisationRecord(_Record):
    """What :meth:`protomatch.library.params.ParameterNormaliser.to_dict` writes."""

    names: list[str]
    log10: list[bool]
    centre: list[FiniteFloat]
    scale: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]]
    method: Literal["zscore", "minmax"]

    @model_validator(mode="after")
    def _check_lengths(self) -> NormalisationRecord:
        lengths = {len(self.names), len(self.log10), len(self.centre), len(self.scale)}
        if len(lengths) != 1:
            raise ValueError("names, log10, centre and scale must have one entry per parameter")
        return self


class _ModelParameters(_Record):
    names: list[str]
    units: dict[str, str] = {}
    normalisation: NormalisationRecord
    weights: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]]

    @model_validator(mode="after")
    def _check_weights(self) -> _ModelParameters:
        if len(self.weights) != len(self.normalisation.names):
            raise ValueError("weights: one weight per normalised parameter")
        return self


class _TrainingLibrary(ArtefactRef):
    au_per_pixel: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    intensity_unit: str | None = None


class _TrainingMetrics(_Record):
    epochs_run: NonNegativeInt | None = None
    best_epoch: NonNegativeInt | None = None
    best: dict[str, Any] | None = None


class ModelManifest(Manifest):
    """``model.json`` of a model folder (:mod:`protomatch.neural_nets.trained`)."""

    KIND: ClassVar[str] = "model"
    SCHEMA_VERSION: ClassVar[int] = 2
    CHECKSUMS_SINCE: ClassVar[int | None] = 2

    kind: Literal["model"]
    architecture: EncoderConfig
    preprocessing: PreprocessConfig
    parameters: _ModelParameters
    brightness: NormalisationRecord | None = None
    library: _TrainingLibrary
    split: dict[str, list[str]] | None = None
    metrics: _TrainingMetrics | None = None
    fingerprint: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]


class _NeighbourStats(_Record):
    p1: StatFloat
    p5: StatFloat
    median: StatFloat


class IndexManifest(Manifest):
    """``index.json`` of an index folder (:mod:`protomatch.matching.index`)."""

    KIND: ClassVar[str] = "index"
    SCHEMA_VERSION: ClassVar[int] = 2
    CHECKSUMS_SINCE: ClassVar[int | None] = 2

    kind: Literal["index"]
    config: dict[str, Any] = {}
    n_images: NonNegativeInt
    dim: PositiveInt
    model: _FolderRef
    library: _FolderRef
    neighbour_similarity: _NeighbourStats


class _ParameterVerdict(_Record):
    """One parameter's verdict, as match reports phrase it."""

    baseline: str
    verdict: str
    error: StatFloat | None = None
    baseline_error: StatFloat | None = None
    prior_error: StatFloat | None = None
    error_unit: str | None = None
    constrained: bool = True


class _Verdict(_Record):
    observations: NonNegativeInt
    observations_path: str | None = None
    method: str | None = None
    rule: str = ""
    parameters: dict[str, _ParameterVerdict]


class EvaluationManifest(Manifest):
    """``metrics.json`` of ``evaluate --observations`` (:mod:`protomatch.matching.validation`)."""

    KIND: ClassVar[str] = "observation-evaluation"
    SCHEMA_VERSION: ClassVar[int] = 2
    CHECKSUMS_SINCE: ClassVar[int | None] = 2

    kind: Literal["observation-evaluation"]
    model: ArtefactRef
    library: ArtefactRef
    verdict: _Verdict | None = None


class CalibrationManifest(Manifest):
    """``calibration.json`` of ``evaluate --observations``: interval calibrations by ranking."""

    KIND: ClassVar[str] = "interval-calibration"
    SCHEMA_VERSION: ClassVar[int] = 2  # written with its metrics.json, which hashes it

    kind: Literal["interval-calibration"]
    model: ArtefactRef
    library: ArtefactRef
    calibrations: dict[str, dict[str, Any]]


class _ReportTarget(_Record):
    name: str
    folder: str
    best_similarity: StatFloat | None = None


class ReportManifest(Manifest):
    """``manifest.json`` of a ``match`` report folder."""

    KIND: ClassVar[str] = "match-report"
    SCHEMA_VERSION: ClassVar[int] = 2
    CHECKSUMS_SINCE: ClassVar[int | None] = 2

    kind: Literal["match-report"]
    model: ArtefactRef
    library: ArtefactRef
    targets: list[_ReportTarget] = []


class _ParamGroup(_Record):
    """One optimiser parameter group: its parameter ids and settings (checked by torch)."""

    params: list[NonNegativeInt]


class CheckpointRecord(_Record):
    """``checkpoints/last.json``: the optimiser's groups, training progress, weights' hash."""

    param_groups: list[_ParamGroup]
    progress: dict[str, Any]
    files: dict[str, FileRecord] | None = None


#: The validated manifest model of each artefact kind.
BY_KIND: Mapping[str, type[Manifest]] = MappingProxyType(
    {
        model.KIND: model
        for model in (
            StoreManifest,
            ModelManifest,
            IndexManifest,
            EvaluationManifest,
            CalibrationManifest,
            ReportManifest,
        )
    }
)

M = TypeVar("M", bound=BaseModel)


def load_manifest(path: str | Path, model: type[M]) -> M:
    """Read a JSON manifest or record and validate it as ``model``.

    For a :class:`Manifest` the file must declare its kind and a schema version this
    version reads.

    Parameters
    ----------
    path
        The manifest file.
    model
        The model of the file expected (e.g. :class:`StoreManifest`).

    Returns
    -------
    Manifest
        The validated manifest.

    Raises
    ------
    InputError
        One line naming the file and, for a bad field, the field: a missing or unreadable
        file, another kind, a newer schema version, a missing field or one of a wrong type
        or out of range.
    """
    path = Path(path)
    if issubclass(model, Manifest):
        payload = read_manifest(path, model.KIND, model.SCHEMA_VERSION)
    else:
        payload = read_json(path)
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        # the models' own checks name their field, so a whole-model location adds nothing
        problem = validation_message(exc).removeprefix("config: ")
        raise InputError(path, f"bad field {problem}") from None
