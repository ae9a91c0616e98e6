"""Benign pickles must scan clean: complete coverage and no finding at MEDIUM or above.

Plain data, standard-library values, numpy, scikit-learn estimators (pickle and joblib), dill and
cloudpickle of plain data. User classes are not allowlisted: their pickles give MS102, and
allowing them through :class:`modelshield.Config` makes the scan clean.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import pickle
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pickle_recipes import Color, TrainingConfig, assert_clean, describe

import modelshield
from modelshield import Config, Severity
from modelshield.policy import PolicyEntry

ALL_PROTOCOLS = range(6)


def _recursive_list() -> list[Any]:
    a: list[Any] = [1, 2]
    a.append(a)
    return a


def _shared() -> dict[str, Any]:
    inner = {"w": [1.0, 2.0]}
    return {"a": inner, "b": inner, "t": (inner, inner)}


PLAIN: dict[str, Callable[[], Any]] = {
    "ints": lambda: [0, 1, -1, 255, 256, 65535, 2**31 - 1, -(2**31), 2**63],
    "big-int": lambda: [10**100, -(10**100)],
    "floats": lambda: [0.0, -1.5, 1e300, float("inf"), float("nan")],
    "strings": lambda: ["", "abc", "é€😀", "line\nbreak", "back\\slash", "quote'\"", "\x00\x1a"],
    "bytes": lambda: [b"", b"\x00\xff" * 10, bytes(range(256))],
    "bytearray": lambda: bytearray(b"abc\x00"),
    "singletons": lambda: [None, True, False, ...],
    "nested": lambda: {"a": [1, (2, 3), {4, 5}, frozenset({6})], "b": {"c": {"d": ()}}},
    "recursive-list": _recursive_list,
    "shared-references": _shared,
    "complex-range-slice": lambda: [complex(1, -2), range(1, 10, 2), slice(1, None, 2)],
    "collections": lambda: [
        collections.OrderedDict(a=1, b=2),
        collections.defaultdict(list, {"x": [1]}),
        collections.deque([1, 2], maxlen=5),
        collections.Counter("abracadabra"),
    ],
    "datetime": lambda: [
        datetime.datetime(2024, 2, 29, 12, 30, 1, 5, tzinfo=datetime.UTC),
        datetime.date(2020, 1, 1),
        datetime.time(1, 2, 3),
        datetime.timedelta(days=1, seconds=2),
        datetime.timezone(datetime.timedelta(hours=-5), "EST"),
    ],
    "numbers": lambda: [decimal.Decimal("3.14"), fractions.Fraction(1, 3), uuid.UUID(int=7)],
}


@pytest.mark.parametrize("protocol", ALL_PROTOCOLS)
@pytest.mark.parametrize("case", sorted(PLAIN))
def test_plain_data_is_clean(case: str, protocol: int) -> None:
    value = PLAIN[case]()
    data = pickle.dumps(value, protocol=protocol)
    pickle.loads(data)
    result = modelshield.scan_bytes(data, f"{case}.pkl")
    assert_clean(result)
    assert not result.findings, describe(result)


NUMPY: dict[str, Callable[[], Any]] = {
    "int8": lambda: np.arange(10, dtype=np.int8),
    "float32-2d": lambda: np.ones((3, 4), dtype=np.float32),
    "float64-fortran": lambda: np.asfortranarray(np.eye(3)),
    "big-endian": lambda: np.arange(3, dtype=">f8"),
    "complex": lambda: np.array([1 + 2j, 3 - 4j]),
    "bool": lambda: np.array([True, False]),
    "unicode": lambda: np.array(["a", "bcd"]),
    "bytes": lambda: np.array([b"x", b"yz"]),
    "datetime64": lambda: np.array(["2020-01-01", "2021-06-30"], dtype="datetime64[D]"),
    "structured": lambda: np.array([(1, 2.0, "a")], dtype=[("i", "i4"), ("f", "f8"), ("s", "U3")]),
    "object-strings": lambda: np.array(["x", "yy", None], dtype=object),
    "scalars": lambda: [np.float64(1.5), np.int32(-3), np.bool_(True), np.complex64(1j)],
    "dtype": lambda: [np.dtype("f4"), np.dtype([("a", "<i2")])],
    "default_rng": lambda: np.random.default_rng(42),
    "RandomState": lambda: np.random.RandomState(42),
}


@pytest.mark.parametrize("protocol", ALL_PROTOCOLS)
@pytest.mark.parametrize("case", sorted(NUMPY))
def test_numpy_is_clean(case: str, protocol: int) -> None:
    data = pickle.dumps(NUMPY[case](), protocol=protocol)
    pickle.loads(data)
    result = modelshield.scan_bytes(data, f"{case}.pkl")
    assert_clean(result)
    assert not result.findings, describe(result)


# ---------------------------------------------------------------------------------- sklearn


@pytest.fixture(scope="module")
def estimators() -> dict[str, Any]:
    sk = pytest.importorskip("sklearn")
    assert sk
    from sklearn.cluster import KMeans
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import LabelEncoder, OneHotEncoder, StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4))
    y = (x[:, 0] > 0).astype(int)
    docs = ["the cat sat", "the dog ran", "a cat and a dog", "ran far away"]
    table = np.array([["red", 1.0], ["blue", 3.0], ["red", 5.0]], dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "LogisticRegression": LogisticRegression().fit(x, y),
            "RandomForestClassifier": RandomForestClassifier(
                n_estimators=3, max_depth=3, random_state=0
            ).fit(x, y),
            "Pipeline": Pipeline(
                [("scale", StandardScaler()), ("pca", PCA(2)), ("svc", SVC())]
            ).fit(x, y),
            "DecisionTreeRegressor": DecisionTreeRegressor(max_depth=3).fit(x, x[:, 1]),
            "KMeans": KMeans(2, n_init=1, random_state=0).fit(x),
            "GradientBoostingClassifier": GradientBoostingClassifier(
                n_estimators=3, max_depth=2
            ).fit(x, y),
            "CountVectorizer": CountVectorizer().fit(docs),
            "TfidfVectorizer": TfidfVectorizer().fit(docs),
            "LabelEncoder": LabelEncoder().fit(["a", "b", "c"]),
            # Pickled through sklearn's Cython newObj(cls) helpers (benchmark false positive).
            "KNeighborsKDTree": KNeighborsClassifier(algorithm="kd_tree").fit(x, y),
            "KNeighborsBallTree": KNeighborsClassifier(algorithm="ball_tree").fit(x, y),
            "ColumnTransformer": ColumnTransformer(
                [
                    ("onehot", OneHotEncoder(handle_unknown="ignore"), [0]),
                    ("num", "passthrough", [1]),
                ]
            ).fit(table),
        }


ESTIMATORS = [
    "LogisticRegression",
    "RandomForestClassifier",
    "Pipeline",
    "DecisionTreeRegressor",
    "KMeans",
    "GradientBoostingClassifier",
    "CountVectorizer",
    "TfidfVectorizer",
    "LabelEncoder",
    "KNeighborsKDTree",
    "KNeighborsBallTree",
    "ColumnTransformer",
]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("name", ESTIMATORS)
def test_sklearn_pickle_is_clean(estimators: dict[str, Any], name: str, protocol: int) -> None:
    data = pickle.dumps(estimators[name], protocol=protocol)
    pickle.loads(data)
    result = modelshield.scan_bytes(data, f"{name}.pkl")
    assert_clean(result)
    assert not result.findings, describe(result)


# joblib writes numpy array bytes raw, inline in the pickle stream, right after the BUILD of each
# joblib.numpy_pickle.NumpyArrayWrapper (NumpyUnpickler reads them from the file during BUILD).
# Object-dtype arrays are written inline as a nested pickle. The scanner steps over the raw
# bytes and analyses the nested pickles.
@pytest.mark.parametrize("name", ESTIMATORS)
def test_sklearn_joblib_uncompressed_is_clean(
    estimators: dict[str, Any], name: str, tmp_path: Path
) -> None:
    joblib = pytest.importorskip("joblib")
    path = tmp_path / f"{name}.joblib"
    joblib.dump(estimators[name], path)
    joblib.load(path)
    result = modelshield.scan(path)
    assert [c.format for c in result.coverage] == ["pickle"]
    assert_clean(result)


def test_joblib_without_arrays_is_clean(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    path = tmp_path / "config.joblib"
    joblib.dump({"vocabulary": {"a": 1}, "version": (1, 2)}, path)
    assert_clean(modelshield.scan(path))


# ---------------------------------------------------------------------- dill and cloudpickle

PLAIN_FOR_LIBS: dict[str, Callable[[], Any]] = {
    "dict": lambda: {"a": [1, 2.5, "x"], "b": (None, True)},
    "list": lambda: [1, "two", b"three", {4}],
}


@pytest.mark.parametrize("case", sorted(PLAIN_FOR_LIBS))
def test_dill_plain_data_is_clean(case: str) -> None:
    dill = pytest.importorskip("dill")
    data = dill.dumps(PLAIN_FOR_LIBS[case]())
    dill.loads(data)
    assert_clean(modelshield.scan_bytes(data, f"{case}.dill"))


def test_dill_numpy_array_is_clean() -> None:
    dill = pytest.importorskip("dill")
    data = dill.dumps(np.arange(4, dtype=np.float32))
    dill.loads(data)
    assert_clean(modelshield.scan_bytes(data, "array.dill"))


@pytest.mark.parametrize("case", [*sorted(PLAIN_FOR_LIBS), "ndarray"])
def test_cloudpickle_plain_data_is_clean(case: str) -> None:
    cloudpickle = pytest.importorskip("cloudpickle")
    value = np.arange(3) if case == "ndarray" else PLAIN_FOR_LIBS[case]()
    data = cloudpickle.dumps(value)
    pickle.loads(data)
    assert_clean(modelshield.scan_bytes(data, f"{case}.cloudpickle"))


# ------------------------------------------------------- user classes: allowed by config only

# A dataclass instance is restored without a call (copyreg.__newobj__ / _reconstructor): MS113
# (medium). An Enum member is restored by *calling* the class, Color(1): MS102 (high).
USER_OBJECTS: dict[str, tuple[Callable[[], Any], str, str]] = {
    "dataclass": (lambda: TrainingConfig(0.01, 5), "pickle_recipes.TrainingConfig", "MS113"),
    "enum": (lambda: [Color.RED, Color.GREEN], "pickle_recipes.Color", "MS102"),
}


@pytest.mark.parametrize("protocol", ALL_PROTOCOLS)
@pytest.mark.parametrize("case", sorted(USER_OBJECTS))
def test_user_class_needs_an_allow_entry(case: str, protocol: int) -> None:
    make, qualname, rule = USER_OBJECTS[case]
    value = make()
    data = pickle.dumps(value, protocol=protocol)
    assert pickle.loads(data) == value

    result = modelshield.scan_bytes(data, f"{case}.pkl")
    assert result.complete
    reported = result.at_or_above(Severity.MEDIUM)
    assert reported, describe(result)
    assert {f.rule_id for f in reported} == {rule}, describe(result)
    assert all(qualname in f.message for f in reported), describe(result)
    assert result.is_clean() is (rule == "MS113"), describe(result)

    entry = PolicyEntry(
        pattern=qualname,
        reason="our own configuration type, reviewed",
        category="user",
        severity=Severity.INFO,
        origin="test",
    )
    allowed = modelshield.scan_bytes(data, f"{case}.pkl", config=Config(allow=(entry,)))
    assert_clean(allowed)
    assert not allowed.findings, describe(allowed)
