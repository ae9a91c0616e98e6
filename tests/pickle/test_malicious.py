"""Malicious pickles: each is first PROVEN to execute with the real loader, then must be flagged.

The recipes live in ``pickle_recipes.py``. A proven test loads the sample with the real loader in
this process and asserts that the payload created its marker file in ``tmp_path``; only then
does it check that :func:`modelshield.scan_bytes` reports the technique at or above the default
threshold (HIGH), with the expected rule and the real target named in the finding.
"""

from __future__ import annotations

import io
import os
import pickle
import string
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pickle_recipes import (
    DETECTION_ONLY,
    PROVEN,
    Recipe,
    Reduce,
    asm,
    assert_flagged,
    describe,
    load_all,
    shell_touch,
    wait_for,
)

import modelshield
from modelshield import Severity


def _cases(recipes: tuple[Recipe, ...]) -> list[Any]:
    return [pytest.param(r, p, id=f"{r.name}-proto{p}") for r in recipes for p in r.protocols]


def _finish(result: object) -> None:
    """Reap child processes a payload returned (subprocess.Popen)."""
    if isinstance(result, subprocess.Popen):
        result.wait(timeout=10)


@pytest.mark.parametrize(("recipe", "protocol"), _cases(PROVEN))
def test_proven_payload_is_flagged(recipe: Recipe, protocol: int, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    data = recipe.build(marker, protocol)
    assert not marker.exists()

    _finish(pickle.loads(data))
    assert wait_for(marker) if recipe.child_process else marker.exists(), (
        f"{recipe.name} did not execute under pickle.loads: the recipe is broken, not the scanner"
    )

    result = modelshield.scan_bytes(data, f"{recipe.name}.pkl")
    assert result.complete, describe(result)
    hits = assert_flagged(result, recipe.target, recipe.rules)
    assert all(h.location.offset is not None for h in hits)
    worst = result.max_severity()
    assert worst is not None and worst >= Severity.HIGH


@pytest.mark.parametrize(("recipe", "protocol"), _cases(DETECTION_ONLY))
def test_detection_only_technique_is_flagged(recipe: Recipe, protocol: int, tmp_path: Path) -> None:
    """Not executed here (see each recipe's ``note``: Windows-only, interactive, native code,
    network, browser, or ``__new__`` that runs nothing); the reference alone must be flagged."""
    data = recipe.build(tmp_path / "marker", protocol)
    result = modelshield.scan_bytes(data, f"{recipe.name}.pkl")
    assert_flagged(result, recipe.target, recipe.rules)


# ------------------------------------------------------------------------------ nested payloads


@pytest.mark.parametrize("protocol", [0, 2, 3, 5])
def test_nested_pickle_finding_points_into_the_inner_pickle(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "marker"
    inner = pickle.dumps(Reduce(os.system, shell_touch(marker)), protocol=2)
    data = pickle.dumps(Reduce(pickle.loads, inner), protocol=protocol)
    pickle.loads(data)
    assert marker.exists()

    result = modelshield.scan_bytes(data, "nested.pkl")
    assert_flagged(result, "pickle.loads", ("MS101", "MS107"))
    hits = assert_flagged(result, "os.system")
    assert any(h.location.member and "nested pickle" in h.location.member for h in hits), describe(
        result
    )


def test_codecs_encode_latin1_bytes_at_protocol_2(tmp_path: Path) -> None:
    """Protocol 2 writes bytes as ``_codecs.encode(text, 'latin1')``; the scanner must decode it
    to follow the nested pickle."""
    marker = tmp_path / "marker"
    inner = pickle.dumps(Reduce(os.system, shell_touch(marker)), protocol=2)
    data = pickle.dumps(Reduce(pickle.loads, inner), protocol=2)
    assert b"_codecs\nencode" in data
    pickle.loads(data)
    assert marker.exists()
    assert_flagged(modelshield.scan_bytes(data), "os.system")


def test_marshal_code_object_is_critical(tmp_path: Path) -> None:
    recipe = next(r for r in PROVEN if r.name == "marshal+FunctionType")
    marker = tmp_path / "marker"
    data = recipe.build(marker, 4)
    pickle.loads(data)
    assert marker.exists()
    result = modelshield.scan_bytes(data)
    assert any(f.rule_id == "MS107" and f.severity is Severity.CRITICAL for f in result.findings)
    assert_flagged(result, "types.FunctionType")


# ------------------------------------------------------------------------- stream-level tricks


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_malicious_pickle_after_a_benign_one(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "marker"
    benign = pickle.dumps({"weights": [1.0, 2.0]}, protocol=protocol)
    evil = pickle.dumps(Reduce(os.system, shell_touch(marker)), protocol=protocol)
    data = benign + evil

    assert pickle.loads(data) == {"weights": [1.0, 2.0]}  # pickle.loads stops at the first STOP
    assert not marker.exists()
    values = load_all(data)  # ... but a loader reading the stream on runs the second pickle
    assert len(values) == 2
    assert marker.exists()

    result = modelshield.scan_bytes(data)
    hits = assert_flagged(result, "os.system")
    assert any(h.location.offset is not None and h.location.offset >= len(benign) for h in hits)


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_payload_before_garbage_runs_then_fails(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "marker"
    body = asm(protocol).call("os", "system", shell_touch(marker)).bytes()
    data = body + b"\xff\xfe garbage"
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(data)
    assert marker.exists(), "the opcodes before the garbage ran"

    result = modelshield.scan_bytes(data)
    assert_flagged(result, "os.system")
    malformed = [f for f in result.findings if f.rule_id == "MS100"]
    assert malformed and malformed[0].location.offset == len(body), describe(result)


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_truncated_after_reduce(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "marker"
    data = asm(protocol).call("os", "system", shell_touch(marker)).bytes()  # no STOP
    with pytest.raises((EOFError, pickle.UnpicklingError)):
        pickle.loads(data)
    assert marker.exists()

    result = modelshield.scan_bytes(data)
    assert_flagged(result, "os.system")
    truncated = [f for f in result.findings if f.rule_id == "MS100"]
    assert truncated and "truncated" in truncated[0].message, describe(result)


# ------------------------------------------------------------------------------ object mutation


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_build_writes_attributes_of_a_module(protocol: int) -> None:
    """BUILD on a module object (from importlib.import_module) updates the module's __dict__."""
    attr = "_modelshield_test_attribute"
    data = (
        asm(protocol)
        .call("importlib", "import_module", "string")
        .mark()
        .text(attr)
        .text("planted")
        .dict_()
        .build()
        .stop()
        .bytes()
    )
    assert not hasattr(string, attr)
    try:
        assert pickle.loads(data) is string
        assert getattr(string, attr) == "planted", "pickle.loads changed the module"
    finally:
        if hasattr(string, attr):
            delattr(string, attr)

    result = modelshield.scan_bytes(data)
    hits = assert_flagged(result, "string", ("MS106",))
    assert attr in (hits[0].evidence or "") + (hits[0].message or "")


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_build_on_a_module_reached_as_a_global(protocol: int) -> None:
    """``GLOBAL os path`` pushes the posixpath module itself; BUILD then writes into it."""
    attr = "_modelshield_test_attribute"
    data = (
        asm(protocol)
        .global_("os", "path")
        .mark()
        .text(attr)
        .text("planted")
        .dict_()
        .build()
        .stop()
        .bytes()
    )
    try:
        assert pickle.loads(data) is os.path
        assert getattr(os.path, attr) == "planted"
    finally:
        if hasattr(os.path, attr):
            delattr(os.path, attr)
    assert_flagged(modelshield.scan_bytes(data), "os.path", ("MS106",))


# ------------------------------------------------------------------------------ dill and joblib


def test_dill_function_is_flagged_as_code() -> None:
    """dill pickles a lambda by value (``_create_function``/``_create_code``). Creating a function
    is not executing it, so this one is detection-only: the code construction must be flagged."""
    dill = pytest.importorskip("dill")
    data = dill.dumps(lambda x: x + 1)
    assert dill.loads(data)(1) == 2  # really a function built from the pickle
    result = modelshield.scan_bytes(data, "model.dill")
    assert_flagged(result, "dill._dill._create_function")


def test_dill_reduce_calls_a_function_built_from_code(tmp_path: Path) -> None:
    """Proven: the REDUCE calls a function that dill rebuilt from a code object."""
    dill = pytest.importorskip("dill")
    marker = tmp_path / "marker"
    data = dill.dumps(Reduce(lambda p: open(p, "w").close(), str(marker)))
    dill.loads(data)
    assert marker.exists()
    result = modelshield.scan_bytes(data, "model.dill")
    assert_flagged(result, "dill._dill._create_function")
    assert_flagged(result, "_create_function", ("MS103",))


def test_dill_os_system(tmp_path: Path) -> None:
    dill = pytest.importorskip("dill")
    marker = tmp_path / "marker"
    data = dill.dumps(Reduce(os.system, shell_touch(marker)))
    dill.loads(data)
    assert marker.exists()
    assert_flagged(modelshield.scan_bytes(data, "model.dill"), "os.system")


def test_joblib_dump_uncompressed(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    marker = tmp_path / "marker"
    path = tmp_path / "model.joblib"
    joblib.dump(Reduce(os.system, shell_touch(marker)), path)
    joblib.load(path)
    assert marker.exists()

    result = modelshield.scan(path)
    assert_flagged(result, "os.system")
    assert [c.format for c in result.coverage] == ["pickle"]


def test_load_all_reads_every_pickle() -> None:
    data = pickle.dumps(1) + pickle.dumps(2)
    assert load_all(data) == [1, 2]
    assert pickle.load(io.BytesIO(data)) == 1


def test_joblib_payload_after_an_inline_numpy_array(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    np = pytest.importorskip("numpy")
    marker = tmp_path / "marker"
    path = tmp_path / "model.joblib"
    joblib.dump([np.arange(3), Reduce(os.system, shell_touch(marker))], path)
    joblib.load(path)
    assert marker.exists()
    assert_flagged(modelshield.scan(path), "os.system")
