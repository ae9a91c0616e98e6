"""dill and cloudpickle pickles: rebuilt code is code execution, plain data is clean.

Both libraries pickle functions, lambdas, closures and classes *by value*: the pickle calls
``dill._dill._create_code`` / ``_create_function`` / ``_create_type`` or cloudpickle's
``_builtin_type('CodeType')`` / ``_make_function`` / ``_make_skeleton_class``. Building a
function is not running it, so most of these are detection-only; the PROVEN samples call the
rebuilt function (or a dill helper that calls its argument) during the load and create a marker.
``tests/pickle/test_malicious.py`` and ``test_benign.py`` hold the basics; this extends them.
"""

from __future__ import annotations

import collections
import datetime
import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pickle"))

from pickle_recipes import (
    Reduce,
    asm,
    assert_clean,
    assert_flagged,
    describe,
    py_touch,
    shell_touch,
)

import modelshield
from modelshield import Severity

dill = pytest.importorskip("dill")
cloudpickle = pytest.importorskip("cloudpickle")

PROTOCOLS = [2, 4, 5]


# ------------------------------------------------------------------------------ code by value
# Everything is defined inside a function so that neither library can pickle it by reference.


def _function() -> Any:
    def scale(x: float, factor: float = 2.0, *, offset: float = 0.0) -> float:
        return x * factor + offset

    return scale


def _lambda() -> Any:
    return lambda x: x + 1


def _closure() -> Any:
    weights = [0.5, 1.5]

    def predict(x: float) -> float:
        return sum(w * x for w in weights)

    return predict


def _recursive() -> Any:
    def fact(n: int) -> int:
        return 1 if n <= 1 else n * fact(n - 1)

    return fact


def _class() -> Any:
    class Model:
        def __init__(self) -> None:
            self.coef = [1.0, 2.0]

        def predict(self, x: float) -> float:
            return self.coef[0] * x

    return Model


def _instance() -> Any:
    return _class()()


def _generator_function() -> Any:
    def gen(n: int) -> Any:
        yield from range(n)

    return gen


CODE: dict[str, Callable[[], Any]] = {
    "function-with-defaults": _function,
    "lambda": _lambda,
    "closure": _closure,
    "recursive-closure": _recursive,
    "class": _class,
    "instance-of-local-class": _instance,
    "generator-function": _generator_function,
    "function-in-a-dict": lambda: {"preprocess": _lambda(), "weights": [1, 2]},
}

# What each library calls to rebuild code: one of these must be named at HIGH or above.
DILL_BUILDERS = (
    "dill._dill._create_function",
    "dill._dill._create_code",
    "dill._dill._create_type",
)
CLOUDPICKLE_BUILDERS = (
    "cloudpickle.cloudpickle._make_function",
    "cloudpickle.cloudpickle._builtin_type",
    "cloudpickle.cloudpickle._make_skeleton_class",
)


def _names_a_builder(result: modelshield.ScanResult, builders: tuple[str, ...]) -> None:
    assert not result.is_clean(), describe(result)
    hits = [
        f
        for f in result.findings
        if f.rule_id == "MS101"
        and f.severity >= Severity.HIGH
        and any(b in f.message for b in builders)
    ]
    assert hits, describe(result)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", sorted(CODE))
def test_dill_code_by_value_is_flagged(case: str, protocol: int) -> None:
    obj = CODE[case]()
    data = dill.dumps(obj, protocol=protocol)
    dill.loads(data)  # the real loader rebuilds it
    _names_a_builder(modelshield.scan_bytes(data, "model.dill"), DILL_BUILDERS)


@pytest.mark.parametrize("case", ["function-with-defaults", "closure", "class"])
def test_dill_recurse_and_byref_settings_still_flagged(case: str) -> None:
    settings: list[dict[str, Any]] = [{"recurse": True}]
    if case != "class":  # byref cannot reach a class local to a function
        settings.append({"byref": True})
    for kwargs in settings:
        data = dill.dumps(CODE[case](), **kwargs)
        dill.loads(data)
        _names_a_builder(modelshield.scan_bytes(data, "model.dill"), DILL_BUILDERS)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", sorted(CODE))
def test_cloudpickle_code_by_value_is_flagged(case: str, protocol: int) -> None:
    data = cloudpickle.dumps(CODE[case](), protocol=protocol)
    pickle.loads(data)  # cloudpickle output is read by plain pickle
    result = modelshield.scan_bytes(data, "model.pkl")
    _names_a_builder(result, CLOUDPICKLE_BUILDERS)


def test_dill_code_finding_carries_the_code_object() -> None:
    data = dill.dumps(_function())
    result = modelshield.scan_bytes(data, "model.dill")
    code = [f for f in result.findings if "dill._dill._create_code" in f.message]
    assert code, describe(result)
    assert "scale" in (code[0].evidence or "")
    assert code[0].location.offset is not None


# ------------------------------------------------------------------------------ proven payloads


def _touch_via_closure(marker: Path) -> Any:
    path = str(marker)

    def touch() -> None:
        open(path, "w").close()

    return Reduce(touch)


def _touch_via_os_global(marker: Path) -> Any:
    cmd = shell_touch(marker)
    return Reduce(lambda: os.system(cmd))  # noqa: S605 - the payload under test


def _touch_via_default_argument(marker: Path) -> Any:
    def touch(p: str = str(marker)) -> None:
        open(p, "w").close()

    return Reduce(touch)


def _touch_via_class_method(marker: Path) -> Any:
    class Hook:
        @staticmethod
        def run(p: str) -> None:
            open(p, "w").close()

    return Reduce(Hook.run, str(marker))


def _payload_beside_data(marker: Path) -> Any:
    return {"weights": np.arange(4.0), "hook": _touch_via_closure(marker), "name": "model"}


PROVEN: dict[str, Callable[[Path], Any]] = {
    "closure": _touch_via_closure,
    "lambda-calling-os.system": _touch_via_os_global,
    "default-argument": _touch_via_default_argument,
    "local-class-staticmethod": _touch_via_class_method,
    "beside-plain-data": _payload_beside_data,
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", sorted(PROVEN))
def test_dill_rebuilt_function_called_on_load(case: str, protocol: int, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    data = dill.dumps(PROVEN[case](marker), protocol=protocol, recurse=True)
    assert not marker.exists()
    dill.loads(data)
    assert marker.exists(), "dill.loads did not run the payload: the sample is broken"

    result = modelshield.scan_bytes(data, "model.dill")
    assert_flagged(result, "dill._dill._create_function")
    assert result.max_severity() is Severity.CRITICAL
    # The REDUCE calls the rebuilt function: a call of a computed object.
    assert_flagged(result, "_create_function", ("MS103",))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", sorted(PROVEN))
def test_cloudpickle_rebuilt_function_called_on_load(
    case: str, protocol: int, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    data = cloudpickle.dumps(PROVEN[case](marker), protocol=protocol)
    assert not marker.exists()
    pickle.loads(data)
    assert marker.exists(), "pickle.loads did not run the payload: the sample is broken"

    result = modelshield.scan_bytes(data, "model.pkl")
    assert_flagged(result, "cloudpickle.cloudpickle._make_function")
    assert result.max_severity() is Severity.CRITICAL


def test_lambda_global_os_is_named(tmp_path: Path) -> None:
    """The rebuilt lambda's globals import os: the finding trail names the os module."""
    marker = tmp_path / "marker"
    data = dill.dumps(_touch_via_os_global(marker), recurse=True)
    dill.loads(data)
    assert marker.exists()
    result = modelshield.scan_bytes(data, "model.dill")
    text = describe(result)
    assert "os" in text and "system" in text, text


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_dill_create_array_calls_its_first_argument(protocol: int, tmp_path: Path) -> None:
    """``_create_array(f, args, state)`` runs ``f(*args)`` before ``__setstate__`` fails."""
    marker = tmp_path / "marker"
    data = (
        asm(protocol)
        .global_("dill._dill", "_create_array")
        .tuple_n(
            [
                lambda a: a.global_("os", "system"),
                lambda a: a.tuple_n([lambda b: b.text(shell_touch(marker))]),
                lambda a: a.none(),
            ]
        )
        .reduce()
        .stop()
        .bytes()
    )
    with pytest.raises(AttributeError):  # int has no __setstate__: too late, it ran
        dill.loads(data)
    assert marker.exists()
    hits = assert_flagged(modelshield.scan_bytes(data, "model.dill"), "os.system")
    assert "_create_array" in hits[0].message


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_dill_eval_repr_runs_its_argument(protocol: int, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    data = asm(protocol).call("dill._dill", "_eval_repr", py_touch(marker)).stop().bytes()
    dill.loads(data)
    assert marker.exists()
    assert_flagged(modelshield.scan_bytes(data, "model.dill"), "dill._dill._eval_repr")


def _dill_get_attr(marker: Path, protocol: int) -> bytes:
    # dill._dill._get_attr(dill._dill._import_module('os'), 'system')('touch ...')
    a = asm(protocol).global_("dill._dill", "_get_attr")
    a.tuple_n(
        [lambda x: x.call("dill._dill", "_import_module", "os"), lambda x: x.text("system")]
    ).reduce()
    return a.args(shell_touch(marker)).reduce().stop().bytes()


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_dill_get_attr_of_imported_module(protocol: int, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    data = _dill_get_attr(marker, protocol)
    dill.loads(data)
    assert marker.exists()
    result = modelshield.scan_bytes(data, "model.dill")
    assert_flagged(result, "dill._dill._get_attr")
    assert_flagged(result, "dill._dill._import_module")


def test_dill_get_attr_names_the_real_target(tmp_path: Path) -> None:
    data = _dill_get_attr(tmp_path / "marker", 2)
    assert_flagged(modelshield.scan_bytes(data, "model.dill"), "os.system")


def test_cloudpickle_subimport_getattr(tmp_path: Path) -> None:
    # getattr(cloudpickle.cloudpickle.subimport('os'), 'system')('touch ...')
    marker = tmp_path / "marker"
    a = asm(2).global_("builtins", "getattr")
    a.tuple_n(
        [lambda x: x.call("cloudpickle.cloudpickle", "subimport", "os"), lambda x: x.text("system")]
    ).reduce()
    data = a.args(shell_touch(marker)).reduce().stop().bytes()
    pickle.loads(data)
    assert marker.exists()
    result = modelshield.scan_bytes(data, "model.pkl")
    assert_flagged(result, "cloudpickle.cloudpickle.subimport")


# ------------------------------------------------------------------------------ plain data

PLAIN: dict[str, Callable[[], Any]] = {
    "dict": lambda: {"a": [1, 2.5, "x"], "b": (None, True), "c": {"nested": {1, 2}}},
    "list": lambda: [1, "two", b"three", frozenset({4}), (5,)],
    "ordered-dict": lambda: collections.OrderedDict(a=1, b=[2]),
    "datetime": lambda: [datetime.datetime(2024, 1, 2, 3, 4), datetime.date(2020, 1, 1)],
    "float-array": lambda: np.linspace(0.0, 1.0, 5),
    "int-matrix": lambda: np.arange(12, dtype=np.int32).reshape(3, 4),
    "fortran-array": lambda: np.asfortranarray(np.ones((2, 3))),
    "big-endian-array": lambda: np.arange(3, dtype=">f8"),
    "object-array": lambda: np.array(["a", None, 3, {"k": 1}], dtype=object),
    "structured-array": lambda: np.zeros(2, dtype=[("a", "<i4"), ("b", "U3")]),
    "zero-d-array": lambda: np.array(1.5),
    "empty-array": lambda: np.empty((0, 2)),
    # dill writes ndarray subclasses through dill._dill._create_array(f, args, state, npdict)
    "masked-array": lambda: np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False]),
    "dtype": lambda: [np.dtype("f4"), np.dtype([("x", "<i8")])],
    "numpy-scalars": lambda: [np.float32(1.5), np.int64(7), np.bool_(True)],
    "arrays-in-dict": lambda: {"w": np.ones(3), "b": np.zeros(1), "meta": {"epochs": 3}},
}


@pytest.mark.parametrize("protocol", [4, 5])  # dill's default is 4; see DILL_HELPER_DATA for 2
@pytest.mark.parametrize("case", sorted(PLAIN))
def test_dill_plain_data_is_clean(case: str, protocol: int) -> None:
    data = dill.dumps(PLAIN[case](), protocol=protocol)
    dill.loads(data)
    result = modelshield.scan_bytes(data, f"{case}.dill")
    assert_clean(result)


class _Tagged(np.ndarray):
    """An ndarray subclass with instance attributes (dill passes them as ``npdict``)."""


def test_dill_create_array_path_is_used_and_clean() -> None:
    plain = np.arange(4.0)
    tagged = np.arange(3).view(_Tagged)
    tagged.units = "m"  # type: ignore[attr-defined]
    for value in (plain, tagged):
        data = dill.dumps(value)
        assert b"_create_array" in data
        assert np.array_equal(dill.loads(data), value)
        result = modelshield.scan_bytes(data, "array.dill")
        assert_clean(result, threshold=Severity.HIGH)
        # _Tagged is a user class (not allowlisted): findings may only name it.
        assert all("_Tagged" in (f.evidence or "") for f in result.findings), describe(result)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", sorted(PLAIN))
def test_cloudpickle_plain_data_is_clean(case: str, protocol: int) -> None:
    data = cloudpickle.dumps(PLAIN[case](), protocol=protocol)
    pickle.loads(data)
    assert_clean(modelshield.scan_bytes(data, f"{case}.pkl"))


# Plain values that dill writes through its own helpers. _load_type only looks a name up in
# dill's table of builtin types; _eval_repr evaluates a repr dill wrote itself (range, Ellipsis).
# Below protocol 4, dill writes sets and frozensets that way too.
DILL_HELPER_DATA: dict[str, tuple[Callable[[], Any], int]] = {
    "bytearray": (lambda: bytearray(b"abc"), 4),
    "complex": (lambda: 1 + 2j, 4),
    "slice": (lambda: slice(1, 10, 2), 4),
    "range": (lambda: range(3), 4),
    "ellipsis": (lambda: ..., 4),
    "builtin-type": (lambda: [int, float, type(None)], 4),
    "set-protocol-2": (lambda: {1, 2}, 2),
    "frozenset-protocol-2": (lambda: frozenset({3}), 2),
}


@pytest.mark.parametrize("case", sorted(DILL_HELPER_DATA))
def test_dill_builtin_helpers_for_plain_data_are_clean(case: str) -> None:
    make, protocol = DILL_HELPER_DATA[case]
    value = make()
    data = dill.dumps(value, protocol=protocol)
    assert dill.loads(data) == value
    assert_clean(modelshield.scan_bytes(data, f"{case}.dill"))


@pytest.mark.parametrize("lib", ["pickle", "dill", "cloudpickle"])
def test_record_array_is_clean(lib: str) -> None:
    value = np.rec.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")])
    data = {"pickle": pickle.dumps, "dill": dill.dumps, "cloudpickle": cloudpickle.dumps}[lib](
        value
    )
    pickle.loads(data)
    assert_clean(modelshield.scan_bytes(data, "rec.pkl"))
