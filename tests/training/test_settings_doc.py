from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from protomatch.training._settings_doc import (
    SET_BY_TRAINING,
    attribute_descriptions,
    format_value,
    main,
    render_settings_doc,
    setting_groups,
    type_name,
)
from protomatch.training.config import TrainConfig, load_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "training-settings.md"
_ROW = re.compile(r"^\| `(?P<key>[^`]+)` \| [^|]+ \| `(?P<default>[^`]*)` \| (?P<text>.+) \|$")


def _documented() -> dict[str, str]:
    """Key → default as written, from the committed page's tables."""
    rows = (_ROW.match(line) for line in DOC.read_text(encoding="utf-8").splitlines())
    return {row["key"]: row["default"] for row in rows if row}


def _leaf_keys(config: BaseModel, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name in type(config).model_fields:
        value = getattr(config, name)
        key = f"{prefix}{name}"
        keys |= _leaf_keys(value, f"{key}.") if isinstance(value, BaseModel) else {key}
    return keys


def _get_dotted(config: BaseModel, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def test_committed_page_is_what_the_generator_renders() -> None:
    assert DOC.read_text(encoding="utf-8") == render_settings_doc(), (
        "docs/training-settings.md is stale; run: "
        "python -m protomatch.training._settings_doc docs/training-settings.md"
    )


def test_page_lists_every_leaf_setting_once() -> None:
    documented = _documented()
    assert set(documented) == _leaf_keys(TrainConfig())
    assert {"pairs.batch_size", "augment.beam", "optim.learning_rate"} <= set(documented)
    assert set(SET_BY_TRAINING) <= set(documented)


def test_every_listed_default_is_accepted_as_a_set_value() -> None:
    defaults = TrainConfig()
    for key, written in _documented().items():
        value = yaml.safe_load(written)  # as `--set KEY=VALUE` reads it
        config = load_config(None, {key: value})
        assert _get_dotted(config, key) == _get_dotted(defaults, key), key


def test_every_setting_is_described() -> None:
    for group in setting_groups():
        assert group.title and "(undocumented)" not in group.title
        for setting in group.settings:
            assert setting.description and "(undocumented)" not in setting.description
            assert "``" not in setting.description and ":class:" not in setting.description


# --------------------------------------------------------------------------- the parts


class _Inner(BaseModel):
    """Inner settings.

    Some prose before the section.

    Attributes
    ----------
    low, high
        A range, shared
        over two lines.
    step : float
        The step.
    described
        From the docstring.

    Notes
    -----
    step
        Not an attribute: this section is a note.
    """

    model_config = ConfigDict(extra="forbid")

    low: float = Field(0.0, ge=0)
    high: float = 1.0
    step: float = Field(0.5, gt=0, lt=1)
    described: int = Field(3, description="from the field")


class _Outer(BaseModel):
    """Outer settings.

    Attributes
    ----------
    inner
        The inner group. See :class:`~some.module.Thing` and ``code``.
    mode
        ``"a"`` or ``"b"``; a | b.
    """

    mode: Literal["a", "b"] | None = "a"
    inner: _Inner = _Inner()
    names: tuple[str, ...] = ()


def test_attribute_section_is_parsed_with_shared_names_types_and_following_sections() -> None:
    found = attribute_descriptions(_Inner)
    assert found == {
        "low": "A range, shared over two lines.",
        "high": "A range, shared over two lines.",
        "step": "The step.",
        "described": "From the docstring.",
    }


def test_a_docstring_without_attributes_gives_nothing() -> None:
    class Bare(BaseModel):
        """Only a summary."""

    assert attribute_descriptions(Bare) == {}


def test_groups_keys_types_defaults_and_descriptions() -> None:
    own, inner = setting_groups(_Outer, title="Outer")
    assert [s.key for s in own.settings] == ["mode", "names"]
    mode, names = own.settings
    assert mode.type == "one of `a`, `b` or null" and mode.default == "a"
    assert mode.description == '`"a"` or `"b"`; a \\| b.'
    assert names.description == "(undocumented)."
    assert inner.prefix == "inner" and inner.title == "The inner group. See `Thing` and `code`."
    by_key = {s.key: s for s in inner.settings}
    assert by_key["inner.low"].type == "number, ≥ 0"
    assert by_key["inner.step"].type == "number, > 0, < 1"
    assert by_key["inner.described"].description == "From the field."  # field wins


@pytest.mark.parametrize(
    ("annotation", "name"),
    [
        (bool, "boolean"),
        (int | None, "integer or null"),
        (tuple[int, ...], "list of integers"),
        (tuple[float, float], "list of 2 numbers"),
        (tuple[int, str], "list [integer, string]"),
        (dict[str, float], "mapping of string to number"),
        (Literal["auto"] | tuple[str, ...], "one of `auto` or list of strings"),
    ],
)
def test_type_names(annotation: Any, name: str) -> None:
    assert type_name(annotation) == name


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (None, "null"),
        (True, "true"),
        (1e-4, "0.0001"),
        ("auto", "auto"),
        ((16, 32), "[16, 32]"),
        ({}, "{}"),
        ({"mass": 2.0}, "{mass: 2.0}"),
    ],
)
def test_values_are_written_as_yaml_that_reads_back(value: Any, written: str) -> None:
    assert format_value(value) == written
    read = yaml.safe_load(written)
    assert read == (list(value) if isinstance(value, tuple) else value)


def test_command_writes_the_page_and_checks_it(tmp_path: Path) -> None:
    page = tmp_path / "settings.md"
    assert main([str(page), "--check"]) == 1
    assert main([str(page)]) == 0
    assert page.read_text(encoding="utf-8") == render_settings_doc()
    assert main([str(page), "--check"]) == 0
    page.write_text("stale", encoding="utf-8")
    assert main([str(page), "--check"]) == 1
