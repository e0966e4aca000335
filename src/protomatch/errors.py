"""Errors a user can act on.

Library code raises these; the command line prints them as one line and exits non-zero,
so a bad file or argument never ends in a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from protomatch._text import safe_name

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound="BaseModel")


class ProtomatchError(Exception):
    """A problem with the user's input or artefacts, stated in one line."""


class InputError(ProtomatchError):
    """A file the user gave cannot be used; the message names the file and the problem.

    Parameters
    ----------
    path
        The file or folder at fault.
    problem
        What is wrong with it, as the end of a sentence that starts with the path; line
        breaks in it (from a parser's message) are joined into one line.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        problem = " ".join(problem.split())
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{safe_name(path)}: {problem}")


class OptionalDependencyError(ProtomatchError):
    """An optional extra is needed for this feature but not installed.

    Parameters
    ----------
    module
        The missing module.
    extra
        The ``protomatch[extra]`` that installs it.
    """

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"this feature needs '{module}', which is not installed; "
            f"install it with: pip install 'protomatch[{extra}]'"
        )


def validation_message(exc: ValidationError) -> str:
    """The first problem of a pydantic validation error, on one line.

    Parameters
    ----------
    exc
        The error raised by a config model.

    Returns
    -------
    str
        ``"dotted.field: message"`` (``"config: message"`` for a problem of the whole model),
        without pydantic's "Value error, " prefix.
    """
    error = exc.errors(include_url=False)[0]
    location = ".".join(str(part) for part in error["loc"]) or "config"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{location}: {message}"


def validated(config_class: type[Model], /, **values: Any) -> Model:
    """Build a config model, turning a validation error into a one-line ProtomatchError.

    Parameters
    ----------
    config_class
        A pydantic model class.
    **values
        Its fields.

    Returns
    -------
    Model
        The validated instance.

    Raises
    ------
    ProtomatchError
        With :func:`validation_message` of the first problem.
    """
    from pydantic import ValidationError

    try:
        return config_class(**values)
    except ValidationError as exc:
        raise ProtomatchError(validation_message(exc)) from None
