"""Render ``docs/training-settings.md``: every training setting, from the config models.

Each leaf of :class:`~protomatch.training.config.TrainConfig` (nested models give dotted
keys such as ``pairs.batch_size``) is listed with its type, constraints, default and
description. A description is the field's ``description`` if it has one, else its entry in
the numpy-style ``Attributes`` section of its model's docstring, so the page says what the
code says. Rewrite the page with::

    python -m protomatch.training._settings_doc docs/training-settings.md

and check it is current with ``--check`` (exit status 1 when it is not).
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeGuard, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from protomatch.training.config import TrainConfig

#: Settings that training replaces whatever they are set to, and what replaces them.
SET_BY_TRAINING = MappingProxyType(
    {
        "encoder.input_size": "the store's image side",
        "encoder.scalar_inputs": "`brightness` (1 when on, else 0)",
    }
)

_COMMAND = "python -m protomatch.training._settings_doc docs/training-settings.md"
_UNDOCUMENTED = "(undocumented)"
_SCALAR_NAMES = MappingProxyType(
    {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
)
_PLURALS = MappingProxyType(
    {"boolean": "booleans", "integer": "integers", "number": "numbers", "string": "strings"}
)
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_SECTION_RULE = re.compile(r"^-{3,}\s*$")


@dataclass(frozen=True)
class Setting:
    """One leaf setting of a training config.

    Attributes
    ----------
    key
        Dotted key, as given to ``--set`` (e.g. ``"pairs.batch_size"``).
    type
        Readable type with its constraints (e.g. ``"integer ≥ 1"``).
    default
        The default, written as a ``--set`` value (YAML: ``null``, ``true``, ``[1, 2]``).
    description
        What it does, one paragraph of markdown.
    """

    key: str
    type: str
    default: str
    description: str


@dataclass(frozen=True)
class SettingGroup:
    """The settings of one (nested) model, under one heading.

    Attributes
    ----------
    prefix
        Dotted prefix of its keys (``""`` for the top level, ``"pairs"`` for ``pairs.*``).
    title
        What the group is, from the parent's description of the field.
    settings
        Its leaf settings, in declaration order.
    """

    prefix: str
    title: str
    settings: tuple[Setting, ...]


# --------------------------------------------------------------------------- docstrings


def attribute_descriptions(model: type[BaseModel]) -> dict[str, str]:
    """The ``Attributes`` section of a model's numpy-style docstring, by attribute name.

    An entry is a name line (``name``, ``name : type`` or several names separated by
    commas, which share the description) followed by indented description lines; the
    section ends at the next section header or the end of the docstring.

    Parameters
    ----------
    model
        A class with a numpy-style docstring.

    Returns
    -------
    dict
        Attribute name → description on one line (empty when there is no section).
    """
    lines = (inspect.getdoc(model) or "").splitlines()
    descriptions: dict[str, str] = {}
    names: list[str] = []
    for line in _attributes_section(lines):
        if line and not line[0].isspace():
            names = [name.strip() for name in line.split(" : ")[0].split(",") if name.strip()]
            descriptions.update(dict.fromkeys(names, ""))
        elif line.strip():
            for name in names:
                descriptions[name] = f"{descriptions[name]} {line.strip()}".strip()
    return descriptions


def _attributes_section(lines: Sequence[str]) -> Iterator[str]:
    """The lines of the ``Attributes`` section, without its header."""
    inside = False
    for i, line in enumerate(lines):
        is_header = i + 1 < len(lines) and _SECTION_RULE.match(lines[i + 1]) is not None
        if is_header and line.strip():
            inside = line.strip() == "Attributes"
            continue
        if _SECTION_RULE.match(line):
            continue
        if inside:
            yield line


def _markdown(text: str) -> str:
    """Docstring text as markdown: roles and double backticks to code spans, ``|`` escaped."""
    text = _ROLE.sub(lambda match: f"`{match[1].split('.')[-1]}`", text)
    return text.replace("``", "`").replace("|", "\\|")


def _sentence(text: str) -> str:
    """A description as a sentence: capital first letter, final full stop."""
    text = " ".join(text.split())
    if not text:
        return text
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


# --------------------------------------------------------------------------- types and values


def type_name(annotation: Any) -> str:
    """A readable name of a setting's type annotation.

    Parameters
    ----------
    annotation
        The field's annotation, e.g. ``tuple[int, ...]`` or ``Literal["a", "b"] | None``.

    Returns
    -------
    str
        E.g. ``"list of integers"``, ``"one of `a`, `b`, or null"``.
    """
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation in _SCALAR_NAMES:
        return _SCALAR_NAMES[annotation]
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in args)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in args)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"list of {_plural(type_name(args[0]))}"
    if origin is tuple and len(set(args)) == 1:
        return f"list of {len(args)} {_plural(type_name(args[0]))}"
    if origin is tuple:
        return "list [" + ", ".join(type_name(arg) for arg in args) + "]"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    return getattr(annotation, "__name__", str(annotation))


def _plural(name: str) -> str:
    return _PLURALS.get(name, name)


def _constraints(field: FieldInfo) -> str:
    """Bounds of a field (``> 0``, ``≤ 1``, ...) from its metadata, comma-separated."""
    symbols = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))
    found = [
        f"{symbol} {format_value(getattr(item, attribute))}"
        for item in field.metadata
        for attribute, symbol in symbols
        if getattr(item, attribute, None) is not None
    ]
    return ", ".join(found)


def format_value(value: Any) -> str:
    """A value as it is written after ``--set KEY=`` (a YAML scalar or flow collection).

    Parameters
    ----------
    value
        A default: None, bool, number, string, tuple/list or dict.

    Returns
    -------
    str
        E.g. ``null``, ``true``, ``0.001``, ``auto``, ``[16, 32]``, ``{}``.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{key}: {format_value(item)}" for key, item in value.items())
        return "{" + inner + "}"
    return str(value) if isinstance(value, str) else repr(value)


# --------------------------------------------------------------------------- the settings


def setting_groups(
    model: type[BaseModel] = TrainConfig, prefix: str = "", title: str = "Top-level settings"
) -> list[SettingGroup]:
    """Every leaf setting of ``model``, grouped by nested model, depth first.

    Parameters
    ----------
    model
        The config model (default: :class:`TrainConfig`).
    prefix
        Dotted prefix of its keys.
    title
        Heading of its own group.

    Returns
    -------
    list of SettingGroup
        The model's own leaves first, then one group per nested model field.
    """
    documented = attribute_descriptions(model)
    leaves: list[Setting] = []
    nested: list[SettingGroup] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        description = _sentence(field.description or documented.get(name) or _UNDOCUMENTED)
        if _is_model(field.annotation):
            nested += setting_groups(field.annotation, key, _markdown(description))
        else:
            leaves.append(_setting(key, field, description))
    own = [SettingGroup(prefix, title, tuple(leaves))] if leaves else []
    return own + nested


def _is_model(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _setting(key: str, field: FieldInfo, description: str) -> Setting:
    kind = type_name(field.annotation)
    bounds = _constraints(field)
    default = field.get_default(call_default_factory=True)
    text = _markdown(description)
    if key in SET_BY_TRAINING:
        text += f" Training replaces it with {SET_BY_TRAINING[key]}."
    return Setting(key, f"{kind}, {bounds}" if bounds else kind, format_value(default), text)


# --------------------------------------------------------------------------- the page


def render_settings_doc() -> str:
    """The markdown of ``docs/training-settings.md``.

    Returns
    -------
    str
        The page: how settings are given, then one table per group of settings.
    """
    parts = [_INTRO.format(command=_COMMAND)]
    for group in setting_groups():
        title = group.title.removesuffix(".")
        heading = f"`{group.prefix}.*`: {title}" if group.prefix else title
        parts.append(f"## {heading}\n\n{_table(group.settings)}")
    return "\n\n".join(parts) + "\n"


def _table(settings: Sequence[Setting]) -> str:
    rows = [
        "| key | type | default | description |",
        "| --- | --- | --- | --- |",
        *(f"| `{s.key}` | {s.type} | `{s.default}` | {s.description} |" for s in settings),
    ]
    return "\n".join(rows)


_INTRO = """\
<!-- Generated from the training config models by `{command}`;
do not edit by hand (a test fails when this page and the code disagree). -->

# Training settings

Every setting of `protomatch train`, with its type, default and meaning. Give them as

* `--set KEY=VALUE` (repeatable), the value read as YAML: `--set pairs.batch_size=64`,
  `--set encoder.channels=[16,32,64]`, `--set stretch=null`, `--set parameters.log10=[age]`;
* a YAML file, `--config train.yaml`, nesting the dotted keys:

  ```yaml
  epochs: 20
  pairs: {{batch_size: 64, balanced: true}}
  augment:
    snr_range: [10, 500]
  ```

* the named options `--epochs`, `--pretrain-epochs`, `--pairs-per-epoch`, `--batch-size`,
  `--lr`, `--loss`, `--device`, `--seed` and `--tensorboard`.

The file is read first, `--set` overrides it and the named options override both; an
unknown key or an invalid value is refused with one line naming it. From Python, the same
keys go to `load_config(path, {{"pairs.batch_size": 64}})`. The resolved settings are saved
in the model's `model.json`."""


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """Write the page to a file (or stdout), or check that a file is current.

    Parameters
    ----------
    argv
        Command-line arguments (None: ``sys.argv[1:]``): an optional output path and
        ``--check``.

    Returns
    -------
    int
        Exit status: 0, or 1 when ``--check`` finds the file out of date.
    """
    parser = argparse.ArgumentParser(
        prog="python -m protomatch.training._settings_doc",
        description="Render the training settings page from the config models.",
    )
    parser.add_argument("path", nargs="?", type=Path, help="file to write (default: stdout)")
    parser.add_argument(
        "--check", action="store_true", help="only check that PATH is current (exit 1 if not)"
    )
    options = parser.parse_args(argv)
    text = render_settings_doc()
    if options.check:
        if options.path is None:
            parser.error("--check needs a PATH")
        current = options.path.is_file() and options.path.read_text(encoding="utf-8") == text
        if not current:
            sys.stderr.write(f"{options.path} is out of date; run: {_COMMAND}\n")
        return 0 if current else 1
    if options.path is None:
        sys.stdout.write(text)
    else:
        options.path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
