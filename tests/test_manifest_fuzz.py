"""Fuzzing every manifest reader: a mutated manifest gives a result or one ProtomatchError line.

Each example takes a valid manifest, then deletes or replaces one to three of its values
(anywhere in the tree) with hostile JSON: wrong types, huge and non-finite numbers, unicode,
deep nesting; or replaces the whole file with arbitrary bytes, a truncation of itself, an
integer of 5000 digits or any JSON value. The reader must then return something
usable or raise one :class:`~protomatch.errors.ProtomatchError` whose message is one line.

CI runs the same 25 examples per reader every time; ``HYPOTHESIS_PROFILE=long`` runs 2000
random ones instead (a longer search).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protomatch.calibration.intervals import CREDIBILITY, IntervalCalibration
from protomatch.errors import ProtomatchError
from protomatch.info import describe_artefact
from protomatch.library.store import LibraryStore
from protomatch.matching.index import EmbeddingIndex, build_index
from protomatch.matching.validation import read_calibrations, read_validation
from protomatch.neural_nets.trained import load_checkpoint, load_model
from protomatch.report.data import verdict_phrase
from protomatch.verify import verify_artefact
from tests.damage import copy_artefact

# The loaded profile (tests/conftest.py) decides randomness and the long run's count; CI
# keeps 25 examples per reader because each one writes and reads a whole artefact.
FUZZ = settings(
    max_examples=min(25, settings.default.max_examples)
    if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci"
    else settings.default.max_examples,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MODEL_FP, LIBRARY_FP = "0123456789abcdef", "fedcba9876543210"

_NASTY = st.sampled_from(
    [
        None, True, False, 0, -1, 2**63, -(2**63) - 1, 10**40, 1e308, -1e308, 5e-324,
        float("inf"), float("-inf"), float("nan"), "", "1.5", "64", "\x00", "é🙂\u202e\ud7ff",
        "../../etc/passwd", [], {}, [1, 2, 3], {"": None}, [[[[[[[[[[[]]]]]]]]]]],
    ]
)  # fmt: skip
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)
_VALUES = _NASTY | _JSON


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every location in a JSON tree (as keys from the root), the root first."""
    yield prefix
    children = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, child in children:
        yield from _paths(child, (*prefix, key))


def _mutate(tree: Any, path: tuple[Any, ...], delete: bool, value: Any) -> Any:
    """``tree`` with the value at ``path`` (not the root) deleted or replaced by ``value``."""
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return tree


@st.composite
def _mutated_text(draw: st.DrawFn, original: dict[str, Any]) -> bytes:
    """The manifest's text after hostile edits, or a hostile file."""
    whole = draw(st.integers(0, 9))
    text = json.dumps(original)
    if whole == 0:
        return draw(st.binary(max_size=300))
    if whole == 1:
        return text.encode()[: draw(st.integers(0, len(text) - 1))]
    if whole == 2:
        return ("1" * 5000).encode()
    if whole == 3:
        return json.dumps(draw(_VALUES)).encode()
    tree = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(tree))[1:]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        value = copy.deepcopy(draw(_VALUES))  # the nasty values are shared objects
        tree = _mutate(tree, path, draw(st.booleans()), value)
    return json.dumps(tree).encode()


def _check(read: Callable[[], Any]) -> str:
    """Run a reader: "result", or "refused" (one ProtomatchError line); else the test fails."""
    try:
        read()
    except ProtomatchError as error:
        assert "\n" not in str(error), str(error)
        return "refused"
    return "result"


def _fuzz(manifest: Path, read: Callable[[], Any]) -> Callable[[], None]:
    """A test feeding mutations of ``manifest`` to ``read``; it reports what it tried."""
    original = json.loads(manifest.read_text())
    outcomes: list[str] = []

    @FUZZ
    @given(data=_mutated_text(original))
    def run(data: bytes) -> None:
        manifest.write_bytes(data)
        outcomes.append(_check(read))

    def run_and_report() -> None:
        run()
        refused = outcomes.count("refused")
        print(f"{manifest.name}: {len(outcomes)} examples, {refused} refused in one line")
        assert outcomes, "no example ran"

    return run_and_report


def _use_store(path: Path) -> None:
    store = LibraryStore.open(path)
    _ = (store.param_names, store.units, store.fingerprint, store.preprocess)
    _ = (store.au_per_pixel, store.intensity_unit, store.described_log10, store.theta())
    _ = store.images[[0, len(store) - 1]]


@pytest.fixture(scope="module")
def built_index(tiny_model: Path, tiny_store: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("fuzz-index") / "index"
    build_index(tiny_model, tiny_store, out)
    return out


def test_store_manifest(tiny_store: Path, tmp_path: Path) -> None:
    store = copy_artefact(tiny_store, tmp_path / "store")
    _fuzz(store / "manifest.json", lambda: _use_store(store))()


def test_model_json(tiny_model: Path, tmp_path: Path) -> None:
    model = copy_artefact(tiny_model, tmp_path / "model")
    _fuzz(model / "model.json", lambda: load_model(model))()


def test_checkpoint_record(tiny_model: Path, tmp_path: Path) -> None:
    model = copy_artefact(tiny_model, tmp_path / "model")
    network = load_model(model).network
    optimizer = torch.optim.AdamW(network.parameters())
    _fuzz(
        model / "checkpoints" / "last.json",
        lambda: load_checkpoint(model / "checkpoints", network, optimizer),
    )()


def test_index_json(built_index: Path, tmp_path: Path) -> None:
    index = copy_artefact(built_index, tmp_path / "index")
    _fuzz(index / "index.json", lambda: EmbeddingIndex.open(index))()


@pytest.mark.parametrize("kind", ["store", "model", "index"])
def test_verify_and_info(kind: str, tiny_store, tiny_model, built_index, tmp_path: Path) -> None:
    source = {"store": tiny_store, "model": tiny_model, "index": built_index}[kind]
    folder = copy_artefact(source, tmp_path / kind)
    name = {"store": "manifest.json", "model": "model.json", "index": "index.json"}[kind]
    _fuzz(folder / name, lambda: (verify_artefact(folder).describe(), describe_artefact(folder)))()


def _evaluation(folder: Path) -> None:
    """A minimal valid ``evaluate --observations`` folder: metrics.json and calibration.json."""
    made_with = {"model": {"fingerprint": MODEL_FP}, "library": {"fingerprint": LIBRARY_FP}}
    verdict = {
        "observations": 12,
        "observations_path": "/observations",
        "method": "protomatch_fused",
        "rule": "per parameter",
        "parameters": {
            "mass": {
                "baseline": "pixels",
                "verdict": "better",
                "interval": [-0.3, -0.1],
                "error": 0.1,
                "baseline_error": 0.2,
                "prior_error": 0.5,
                "error_unit": "dex",
                "constrained": True,
            }
        },
    }
    scales = MappingProxyType({"mass": tuple(1.0 for _ in CREDIBILITY)})
    calibration = IntervalCalibration(scales, "12 mock observations", 12, "fused")
    folder.mkdir()
    (folder / "metrics.json").write_text(
        json.dumps(
            {"kind": "observation-evaluation", "schema_version": 1, **made_with, "verdict": verdict}
        )
    )
    (folder / "calibration.json").write_text(
        json.dumps(
            {
                "kind": "interval-calibration",
                "schema_version": 1,
                **made_with,
                "calibrations": {"protomatch_fused": calibration.record()},
            }
        )
    )


def _use_validation(folder: Path) -> None:
    validation = read_validation(folder, MODEL_FP, LIBRARY_FP)
    for entry in validation["parameters"].values():
        verdict_phrase(entry, validation["observations"])


def test_evaluation_metrics(tmp_path: Path) -> None:
    _evaluation(tmp_path / "evaluation")
    _use_validation(tmp_path / "evaluation")  # the unmutated files read
    _fuzz(
        tmp_path / "evaluation" / "metrics.json", lambda: _use_validation(tmp_path / "evaluation")
    )()


def test_evaluation_calibration(tmp_path: Path) -> None:
    folder = tmp_path / "evaluation"
    _evaluation(folder)
    assert read_calibrations(folder, MODEL_FP, LIBRARY_FP)["protomatch_fused"].n_queries == 12
    _fuzz(folder / "calibration.json", lambda: read_calibrations(folder, MODEL_FP, LIBRARY_FP))()
