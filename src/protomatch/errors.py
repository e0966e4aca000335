"""Errors a user can act on.

Library code raises these; the command line prints them as one line and exits non-zero,
so a bad file or argument never ends in a traceback.
"""

from __future__ import annotations

from pathlib import Path


class ProtomatchError(Exception):
    """A problem with the user's input or artefacts, stated in one line."""


class InputError(ProtomatchError):
    """A file the user gave cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class OptionalDependencyError(ProtomatchError):
    """An optional extra is needed for this feature but not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"this feature needs '{module}', which is not installed; "
            f"install it with: pip install 'protomatch[{extra}]'"
        )
