"""The ``protomatch`` command line: one thin sub-command per pipeline stage.

Each command parses its options and calls one public function of the package; errors the
user can act on (:class:`~protomatch.errors.ProtomatchError`) are printed as one line.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import click
import typer

from protomatch.errors import ProtomatchError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Match observed images of protostellar systems to a library of simulations.",
)

log = logging.getLogger("protomatch")


@app.callback()
def _configure(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )


@app.command()
def simulate(
    out: Annotated[Path, typer.Argument(help="Folder to write the library into.")],
    systems: Annotated[int, typer.Option(help="Number of protostellar systems.")] = 48,
    snapshots: Annotated[int, typer.Option(help="Snapshots per system.")] = 12,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    workers: Annotated[int, typer.Option(help="Worker processes (0: one per core).")] = 0,
    preview: Annotated[bool, typer.Option(help="Also write preview.png.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty OUT.")] = False,
) -> None:
    """Write a simulated library in the HDF5 schema of real simulation libraries."""
    from protomatch.simulate import simulate_library

    result = simulate_library(
        out,
        systems=systems,
        snapshots=snapshots,
        size=size,
        seed=seed,
        workers=workers or None,
        preview=preview,
        overwrite=overwrite,
    )
    typer.echo(result.describe())


@app.command()
def ingest(
    src: Annotated[Path, typer.Argument(help="Library folder (HDF5 tree, or images + catalog).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Store folder to write.")],
    size: Annotated[int, typer.Option(help="Image side in pixels after crop/resize.")] = 64,
    stretch: Annotated[str, typer.Option(help="Intensity stretch: log, asinh or linear.")] = "log",
    skip_bad: Annotated[bool, typer.Option(help="Skip unreadable files; report them.")] = False,
    workers: Annotated[int, typer.Option(help="Worker processes (0: one per core).")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output.")] = False,
) -> None:
    """Validate a library, preprocess every image once and write a fast library store."""
    from protomatch.store import ingest_library

    result = ingest_library(
        src,
        output,
        size=size,
        stretch=stretch,
        skip_bad=skip_bad,
        workers=workers or None,
        overwrite=overwrite,
    )
    typer.echo(result.describe())


def main() -> None:
    """Console entry point: run the app, turning user errors into one line and exit code 2."""
    try:
        app(standalone_mode=False)
    except ProtomatchError as exc:
        typer.echo(f"protomatch: error: {exc}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("protomatch: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
