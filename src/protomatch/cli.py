"""The ``protomatch`` command line: one thin sub-command per pipeline stage.

Each command parses its options and calls one public function of the package; errors the
user can act on (:class:`~protomatch.errors.ProtomatchError`) are printed as one line.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from protomatch._text import safe_name
from protomatch.errors import ProtomatchError, validated
from protomatch.library.formats import DEFAULT_MAX_IMAGE_SIDE
from protomatch.matching.summary import DEFAULT_MATCHES

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Match observed images of protostellar systems to a library of simulations.",
)

#: The package's root logger; every module logs to a child (``logging.getLogger(__name__)``).
log = logging.getLogger("protomatch")


def _print_version(value: bool) -> None:
    if value:
        from protomatch import __version__

        typer.echo(f"protomatch {__version__}")
        raise typer.Exit()


class _SafeFormatter(logging.Formatter):
    """Log lines as printable text: a file name's odd bytes or escape codes shown escaped."""

    def format(self, record: logging.LogRecord) -> str:
        lines = super().format(record).split("\n")
        return "\n".join(safe_name(line) for line in lines)


@app.callback()
def _configure(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Send the package's log messages to stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SafeFormatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


@app.command()
def simulate(
    out: Annotated[Path, typer.Argument(help="Folder to write the library into.")],
    systems: Annotated[int, typer.Option(help="Number of protostellar systems.")] = 96,
    snapshots: Annotated[int, typer.Option(help="Snapshots per system.")] = 6,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    field_of_view_au: Annotated[
        float, typer.Option(help="Image side in AU (pixel scale: this / size).")
    ] = 1600.0,
    workers: Annotated[int, typer.Option(help="Worker processes (0: one per core).")] = 0,
    preview: Annotated[bool, typer.Option(help="Also write preview.png.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty OUT.")] = False,
) -> None:
    """Write a simulated library in the HDF5 schema of real simulation libraries."""
    from protomatch.simulators.library import SimulateConfig, simulate_library

    config = validated(
        SimulateConfig,
        systems=systems,
        snapshots=snapshots,
        size=size,
        seed=seed,
        field_of_view_au=field_of_view_au,
    )
    result = simulate_library(
        out, config=config, workers=workers or None, preview=preview, overwrite=overwrite
    )
    typer.echo(result.describe())


@app.command()
def ingest(
    src: Annotated[Path, typer.Argument(help="Library folder (HDF5 tree, or images + catalog).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Store folder to write.")],
    size: Annotated[int, typer.Option(help="Image side in pixels after crop/resize.")] = 64,
    stretch: Annotated[str, typer.Option(help="Intensity stretch: log, asinh or linear.")] = "log",
    skip_bad: Annotated[bool, typer.Option(help="Skip unreadable files; report them.")] = False,
    au_per_pixel: Annotated[
        float | None, typer.Option(help="Pixel side of the library's images as written, AU.")
    ] = None,
    field_of_view_au: Annotated[
        float | None, typer.Option(help="Or: side of the library's images, AU.")
    ] = None,
    intensity_unit: Annotated[
        str | None, typer.Option(help="Unit of the library's image values, e.g. Jy/sr.")
    ] = None,
    description: Annotated[
        Path | None, typer.Option(help="Library description YAML (default: SRC/library.yaml).")
    ] = None,
    max_image_side: Annotated[
        int, typer.Option(help="Refuse (or with --skip-bad skip) images with a longer side, px.")
    ] = DEFAULT_MAX_IMAGE_SIDE,
    workers: Annotated[int, typer.Option(help="Worker processes (0: one per core).")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output.")] = False,
) -> None:
    """Validate a library, preprocess every image once and write a fast library store.

    The library's pixel scale, intensity unit and parameters are taken from these options,
    else from the description file, else from the files' attributes; what is still unknown
    is said, with what it disables.
    """
    from protomatch.library.description import LibraryDescription
    from protomatch.library.ingest import IngestConfig, ingest_library

    config = validated(
        IngestConfig,
        size=size,
        stretch=stretch,
        skip_bad=skip_bad,
        max_image_side=max_image_side,
    )
    described = validated(
        LibraryDescription,
        au_per_pixel=au_per_pixel,
        field_of_view_au=field_of_view_au,
        intensity_unit=intensity_unit,
    )
    result = ingest_library(
        src,
        output,
        config=config,
        described=described,
        description_file=description,
        workers=workers or None,
        overwrite=overwrite,
    )
    typer.echo(result.describe())


@app.command()
def train(
    library: Annotated[Path, typer.Argument(help="Library store written by `ingest`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model folder to write.")],
    config: Annotated[Path | None, typer.Option(help="YAML training config.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override: epochs.")] = None,
    pretrain_epochs: Annotated[
        int | None, typer.Option(help="Override: autoencoder epochs.")
    ] = None,
    pairs_per_epoch: Annotated[int | None, typer.Option(help="Override: pairs per epoch.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Override: pairs per batch.")] = None,
    lr: Annotated[float | None, typer.Option(help="Override: learning rate.")] = None,
    loss: Annotated[str | None, typer.Option(help="Override: contrastive or mse.")] = None,
    device: Annotated[str | None, typer.Option(help="Override: auto, cpu, cuda or mps.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override: random seed.")] = None,
    tensorboard: Annotated[bool, typer.Option(help="Also log to TensorBoard.")] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override any setting: KEY=VALUE, e.g. augment.beam=true."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue a killed or finished run from its last checkpoint, with its own "
            "settings and library (a different one given is refused)."
        ),
    ] = False,
    allow_changed: Annotated[
        list[str] | None,
        typer.Option(
            help="With --resume: let this setting (e.g. epochs, optim.learning_rate, or "
            "'library') differ from the run's; recorded in model.json. Repeatable."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Start a new run in a non-empty output (emptied first).")
    ] = False,
) -> None:
    """Train the Siamese network on a library store."""
    from protomatch.training.config import load_config
    from protomatch.training.engine import train_model
    from protomatch.training.resume import run_settings

    overrides = _parse_settings(set_ or [])
    named: dict[str, object] = {
        "epochs": epochs,
        "pretrain_epochs": pretrain_epochs,
        "pairs.pairs_per_epoch": pairs_per_epoch,
        "pairs.batch_size": batch_size,
        "optim.learning_rate": lr,
        "loss": loss,
        "device": device,
        "seed": seed,
    }
    overrides.update({key: value for key, value in named.items() if value is not None})
    if tensorboard:
        overrides["tensorboard"] = True
    base = run_settings(output) if resume and config is None else None
    resolved = load_config(config, overrides, base)
    result = train_model(
        library,
        output,
        config=resolved,
        resume=resume,
        overwrite=overwrite,
        allow_changed=allow_changed or (),
    )
    typer.echo(result.describe())


@app.command()
def index(
    model: Annotated[Path, typer.Argument(help="Model folder written by `train`.")],
    library: Annotated[Path, typer.Argument(help="Library store written by `ingest`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Index folder to write.")],
    kind: Annotated[
        str, typer.Option(help="flat (exact), flat16 (exact up to float16), ivf or hnsw.")
    ] = "flat",
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output.")] = False,
) -> None:
    """Embed the whole library once and build a FAISS similarity index."""
    from protomatch.matching.index import IndexConfig, build_index

    config = validated(IndexConfig, kind=kind)
    typer.echo(build_index(model, library, output, config=config, overwrite=overwrite).describe())


@app.command()
def match(
    index: Annotated[Path, typer.Argument(help="Index folder written by `index`.")],
    observations: Annotated[
        list[str], typer.Argument(help="FITS, .npy, or library file with projection (f.hdf5:3).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Report folder to write.")],
    k: Annotated[int, typer.Option("--k", help="Number of best matches.")] = DEFAULT_MATCHES,
    threshold: Annotated[
        float | None, typer.Option(help="Keep every match with similarity >= T instead of k.")
    ] = None,
    distance: Annotated[
        float | None, typer.Option(help="Distance to the observed system, pc.")
    ] = None,
    distance_range: Annotated[
        tuple[float, float] | None,
        typer.Option(help="Match across distances LO HI (pc), pooled; reports which fit best."),
    ] = None,
    distance_steps: Annotated[
        int, typer.Option(help="Distances tried across --distance-range (log-spaced).")
    ] = 7,
    pixel_scale: Annotated[
        float | None, typer.Option(help="The observation's pixel side, arcsec (no WCS).")
    ] = None,
    au_per_pixel: Annotated[
        float | None, typer.Option(help="Or: the observation's pixel side at the source, AU.")
    ] = None,
    beam: Annotated[
        tuple[float, float, float] | None,
        typer.Option(help="Beam: major and minor FWHM (arcsec) and PA (deg east of north)."),
    ] = None,
    intensity_unit: Annotated[
        str | None, typer.Option(help="Unit of the observation's values, e.g. mJy/beam.")
    ] = None,
    unscaled: Annotated[
        bool,
        typer.Option(help="Match even without pixel scale, distance, beam or unit (said on top)."),
    ] = False,
    model: Annotated[Path | None, typer.Option(help="Model folder, if moved.")] = None,
    library: Annotated[Path | None, typer.Option(help="Library store, if moved.")] = None,
    evaluation: Annotated[
        Path | None,
        typer.Option(
            help="Folder of 'protomatch evaluate --observations' for this model: its "
            "per-parameter verdict against the strongest baseline goes into the report, and "
            "its interval calibration is applied to observations ranked as it ranked them."
        ),
    ] = None,
    include_own_system: Annotated[
        bool, typer.Option(help="For a library image as target, keep its own system's images.")
    ] = False,
    centre: Annotated[
        str,
        typer.Option(help="Cut the field around the 'source' (brightest point) or 'image' centre."),
    ] = "source",
    ranking: Annotated[
        str,
        typer.Option(
            help="For an observation with a beam: rank by the network's similarity 'fused' "
            "with the pixels' (measured better) or by the 'network' alone."
        ),
    ] = "fused",
    max_image_side: Annotated[
        int, typer.Option(help="Refuse observations with a longer side, px (read from headers).")
    ] = DEFAULT_MAX_IMAGE_SIDE,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output.")] = False,
) -> None:
    """Find the best-matching simulated images of each observation and write a report.

    The observation is compared at the library's physical pixel scale, through its beam; when
    its pixel scale, distance or beam (or the library's pixel scale) is unknown, match stops
    and names the option that supplies it, unless --unscaled.
    """
    from protomatch.matching.facts import ObservationFacts
    from protomatch.matching.match import MatchConfig, match_observations

    facts = validated(
        ObservationFacts,
        pixel_scale_arcsec=pixel_scale,
        au_per_pixel=au_per_pixel,
        beam_arcsec=beam,
        intensity_unit=intensity_unit,
    )
    config = validated(
        MatchConfig,
        k=k,
        threshold=threshold,
        distance_pc=distance,
        distance_range_pc=distance_range,
        distance_steps=distance_steps,
        facts=facts,
        unscaled=unscaled,
        include_own_system=include_own_system,
        centre=centre,
        ranking=ranking,
        max_image_side=max_image_side,
    )
    result = match_observations(
        index,
        observations,
        output,
        config=config,
        model=model,
        library=library,
        evaluation=evaluation,
        overwrite=overwrite,
    )
    typer.echo(result.describe())


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="Model folder written by `train`.")],
    library: Annotated[Path, typer.Argument(help="Library store written by `ingest`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for metrics and figures.")],
    pairs: Annotated[int, typer.Option(help="Random test pairs for similarity metrics.")] = 4000,
    k: Annotated[
        list[int] | None, typer.Option("--k", help="Cut-off(s) for precision@k, nDCG@k.")
    ] = None,
    k_recovery: Annotated[
        int, typer.Option(help="Best matches used for parameter recovery.")
    ] = DEFAULT_MATCHES,
    threshold: Annotated[
        float, typer.Option(help="True similarity at which a library image is relevant.")
    ] = 0.9,
    queries: Annotated[int, typer.Option(help="Test images used as queries (at most).")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    observations: Annotated[
        Path | None,
        typer.Option(help="Mock observations from `observe`: score recovery against truth.csv."),
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option(help="With --observations: a method to evaluate (repeatable; 'all')."),
    ] = None,
    centre: Annotated[
        str, typer.Option(help="With --observations: cut around the 'source' or 'image' centre.")
    ] = "source",
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output.")] = False,
) -> None:
    """Score a model on test systems it never saw (or on mock observations), vs baselines."""
    from protomatch.evaluation.library import EvaluateConfig, evaluate_model

    if observations is not None:
        from protomatch.evaluation.observations import (
            METHODS,
            ObservationEvaluationConfig,
            evaluate_observations,
        )

        methods = list(METHODS) if method and "all" in method else method
        evaluation = validated(
            ObservationEvaluationConfig,
            k=k_recovery,
            methods=None if methods is None else tuple(methods),
            centre=centre,
        )
        result = evaluate_observations(
            model, library, observations, output, config=evaluation, overwrite=overwrite
        )
        typer.echo(result.describe())
        return

    settings: dict[str, Any] = {
        "pairs": pairs,
        "k_recovery": k_recovery,
        "relevance_threshold": threshold,
        "max_queries": queries,
        "seed": seed,
    }
    if k:
        settings["k"] = tuple(k)
    config = validated(EvaluateConfig, **settings)
    typer.echo(
        evaluate_model(model, library, output, config=config, overwrite=overwrite).describe()
    )


@app.command()
def observe(
    library: Annotated[Path, typer.Argument(help="Simulated library (or its store) to avoid.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for FITS + truth.csv.")],
    n: Annotated[int, typer.Option("--n", help="Number of mock observations.")] = 60,
    seed: Annotated[int, typer.Option(help="Seed; must differ from the library's.")] = 1,
    snapshots_per_system: Annotated[int, typer.Option(help="Observations per system.")] = 1,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any setting KEY=VALUE, e.g. snr_range=[5,50]."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (0: one per core).")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output.")] = False,
) -> None:
    """Make mock observations (FITS with WCS, beam, noise) of systems not in a library."""
    from protomatch.simulators.observations import ObserveConfig, make_observations

    settings = {"n": n, "seed": seed, "snapshots_per_system": snapshots_per_system}
    settings.update(_parse_settings(set_ or []))
    config = validated(ObserveConfig, **settings)
    result = make_observations(
        library, output, config=config, workers=workers or None, overwrite=overwrite
    )
    typer.echo(result.describe())


@app.command()
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for every stage.")] = Path(
        "protomatch-demo"
    ),
    workers: Annotated[int, typer.Option(help="Worker processes (0: one per core).")] = 0,
) -> None:
    """Simulate, ingest, train, index and match a held-out system: the whole pipeline."""
    from protomatch.demo import run_demo

    typer.echo(run_demo(output, workers=workers or None).describe())


@app.command()
def info(
    artefact: Annotated[
        Path, typer.Argument(help="A store, model, index, library, observations or report folder.")
    ],
) -> None:
    """Say what an artefact knows (pixel scale, unit, parameters, their sources) and its origin."""
    from protomatch.info import describe_artefact

    typer.echo(describe_artefact(artefact))


@app.command()
def verify(
    artefact: Annotated[
        Path, typer.Argument(help="A store, model, index, evaluation or report folder.")
    ],
) -> None:
    """Re-hash every file of an artefact and check its contents; exit 1 on any problem."""
    from protomatch.verify import verify_artefact

    result = verify_artefact(artefact)
    typer.echo(result.describe())
    if not result.ok:
        raise typer.Exit(1)


def _parse_settings(settings: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs with YAML-typed values (numbers, booleans, lists)."""
    import yaml

    parsed: dict[str, Any] = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise ProtomatchError(f"--set expects KEY=VALUE, got {setting!r}")
        try:
            parsed[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = " ".join(str(exc).split())
            raise ProtomatchError(
                f"--set {key.strip()}: {value!r} is not a plain YAML value "
                f"(numbers, text, true/false, lists; no tags): {problem}"
            ) from None
    return parsed


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2.

    Typer's standalone mode handles usage errors and --help itself and lets every other
    exception through, so only our own errors need catching here.
    """
    try:
        app()
    except ProtomatchError as exc:
        typer.echo(f"protomatch: error: {safe_name(str(exc))}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
