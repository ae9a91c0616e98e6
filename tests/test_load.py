"""``safe_load`` and the drop-ins: scan the bytes, then unpickle those same bytes under the policy.

Benign files are written by the real libraries (torch, joblib, scikit-learn) and must load equal
to what the library itself returns. Malicious ones create a marker file when they run, so every
refusal also proves that nothing ran.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
joblib = pytest.importorskip("joblib")

import modelshield  # noqa: E402
from modelshield import load as load_mod  # noqa: E402
from modelshield.errors import ModelShieldError, UnsafeInputError  # noqa: E402
from modelshield.findings import CoverageStatus, Severity  # noqa: E402
from modelshield.load import (  # noqa: E402
    DisallowedGlobalError,
    UnsafeModelError,
    joblib_load,
    pickle_load,
    policy_pickle_module,
    safe_load,
    torch_load,
)
from modelshield.policy import PolicyEntry  # noqa: E402
from modelshield.scanner import scan_bytes as real_scan_bytes  # noqa: E402

# ---------------------------------------------------------------------------------- helpers


class Reduce:
    """Pickles as ``func(*args)``: unpickling calls ``func``."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def touch(marker: Path) -> Reduce:
    return Reduce(os.system, f"touch '{marker}'")


def evil_torch(tmp_path: Path, marker: Path, *, legacy: bool = False) -> Path:
    """A real torch.save archive whose data.pkl runs os.system (or a legacy file doing so)."""
    evil = tmp_path / "evil.pt"
    if legacy:
        # torch.save itself pickles the payload object (it is not run at save time).
        torch.save(
            {"w": torch.ones(2), "x": touch(marker)}, evil, _use_new_zipfile_serialization=False
        )
        return evil
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(4.0)}, good)
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(evil, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = pickle.dumps({"w": touch(marker)}, protocol=2)
            zout.writestr(info, data)
    return evil


def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    """Write an importable module ``name`` whose import creates ``<tmp>/<name>.imported``."""
    marker = tmp_path / f"{name}.imported"
    (tmp_path / f"{name}.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "class Net:\n"
        "    def __init__(self):\n"
        "        self.scale = 2\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


def newobj_pickle(module: str, name: str, state: dict[str, Any]) -> bytes:
    """``module.name.__new__`` + BUILD, written by hand (nothing is imported to write it)."""
    body = pickle.dumps(state, protocol=4)[2:-1]  # the dict, without PROTO and STOP
    head = b"\x80\x04c" + module.encode() + b"\n" + name.encode() + b"\n)\x81"
    return head + body + b"b."


def assert_state_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------------------------- benign torch


MODULES = {
    "linear": lambda: torch.nn.Linear(5, 3),
    "conv": lambda: torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(), torch.nn.Flatten()
    ),
    "lstm": lambda: torch.nn.LSTM(4, 6, num_layers=2),
    "embedding": lambda: torch.nn.Embedding(20, 4),
    "transformer": lambda: torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(8, 2, 16), num_layers=1, enable_nested_tensor=False
    ),
}


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("kind", sorted(MODULES))
def test_state_dicts_load_like_torch(tmp_path: Path, kind: str, legacy: bool) -> None:
    torch.manual_seed(0)
    sd = MODULES[kind]().state_dict()
    path = tmp_path / "sd.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
    want = torch.load(path, weights_only=True)
    for loader in (torch_load, safe_load, modelshield.safe_load):
        got: Any = loader(str(path))
        assert type(got) is type(want)
        assert_state_equal(got, want)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("kind", sorted(MODULES))
def test_full_modules_load_and_compute(tmp_path: Path, kind: str, legacy: bool) -> None:
    torch.manual_seed(0)
    module = MODULES[kind]().eval()
    path = tmp_path / "module.pt"
    torch.save(module, path, _use_new_zipfile_serialization=not legacy)
    got = torch_load(path)
    assert type(got) is type(module)
    assert_state_equal(got.state_dict(), module.state_dict())
    assert type(safe_load(path)) is type(module)
    x = {
        "linear": torch.randn(2, 5),
        "conv": torch.randn(2, 1, 5, 5),
        "lstm": torch.randn(3, 2, 4),
        "embedding": torch.tensor([1, 7, 19]),
        "transformer": torch.randn(3, 2, 8),
    }[kind]
    with torch.no_grad():
        a, b = got.eval()(x), module(x)
    if isinstance(a, tuple):
        a, b = a[0], b[0]
    assert torch.equal(a, b)


def test_torch_load_kwargs(tmp_path: Path) -> None:
    path = tmp_path / "sd.pt"
    sd = {"w": torch.randn(3), "step": 7, "names": ["a", "b"], "nested": {"t": (1, 2.5)}}
    torch.save(sd, path)
    got = torch_load(path, map_location="cpu", weights_only=True)  # weights_only is dropped
    assert got["step"] == 7 and got["names"] == ["a", "b"] and got["nested"] == {"t": (1, 2.5)}
    assert torch.equal(got["w"], sd["w"])
    mmapped = torch_load(path, mmap=False)
    assert torch.equal(mmapped["w"], sd["w"])


def test_tied_weights_stay_tied(tmp_path: Path) -> None:
    w = torch.randn(4, 4)
    path = tmp_path / "tied.pt"
    torch.save({"a": w, "b": w, "row": w[1]}, path)
    got = torch_load(path)
    assert got["a"].data_ptr() == got["b"].data_ptr()
    assert got["row"].untyped_storage().data_ptr() == got["a"].untyped_storage().data_ptr()


def test_policy_pickle_module_is_usable_by_torch(tmp_path: Path) -> None:
    path = tmp_path / "sd.pt"
    torch.save({"w": torch.ones(2)}, path)
    mod = policy_pickle_module()
    assert mod.__name__ == "pickle"
    got = torch.load(path, weights_only=False, pickle_module=mod)
    assert torch.equal(got["w"], torch.ones(2))
    with pytest.raises(DisallowedGlobalError):
        mod.loads(pickle.dumps(Reduce(os.getcwd)))


# ---------------------------------------------------------------------------------- scikit-learn


def estimators() -> dict[str, Any]:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    return {
        "pipeline": make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(x, y),
        "forest": RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(x, y),
    }


COMPRESSIONS: list[Any] = [0, 3, ("zlib", 3), ("gzip", 3), ("bz2", 3), ("lzma", 3), ("xz", 3)]
try:
    import lz4  # noqa: F401
except ImportError:  # pragma: no cover - lz4 is a test dependency
    pass
else:
    COMPRESSIONS.append(("lz4", 3))


@pytest.mark.parametrize("compress", COMPRESSIONS, ids=str)
def test_sklearn_via_joblib_every_compression(tmp_path: Path, compress: Any) -> None:
    from sklearn.datasets import load_iris

    x, _ = load_iris(return_X_y=True)
    for name, est in estimators().items():
        path = tmp_path / f"{name}.joblib"
        joblib.dump(est, path, compress=compress)
        reference = joblib.load(path)
        for loader in (joblib_load, safe_load):
            got = loader(path)
            assert type(got) is type(est)
            assert np.array_equal(got.predict(x), reference.predict(x))
            assert np.array_equal(got.predict_proba(x), est.predict_proba(x))


def test_plain_pickles_of_numpy_and_sklearn(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris

    x, _ = load_iris(return_X_y=True)
    est = estimators()["pipeline"]
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps({"est": est, "arr": np.arange(5.0)}, protocol=protocol))
        for loader in (pickle_load, safe_load):
            got = loader(path)
            assert np.array_equal(got["arr"], np.arange(5.0))
            assert np.array_equal(got["est"].predict(x), est.predict(x))


# ---------------------------------------------------------------------------------- malicious


def assert_refused(exc: UnsafeModelError, marker: Path) -> None:
    assert isinstance(exc, UnsafeInputError) and isinstance(exc, ModelShieldError)
    assert exc.findings, "the error carries the findings"
    assert any(f.rule_id == "MS101" for f in exc.findings)
    assert all(f.severity >= Severity.HIGH for f in exc.findings)
    assert "os.system" in exc.diagnostics() or "posix.system" in exc.diagnostics()
    assert "refused to load" in str(exc)
    assert not marker.exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_checkpoint(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "marker"
    evil = evil_torch(tmp_path, marker, legacy=legacy)
    for loader in (torch_load, safe_load, modelshield.safe_load):
        with pytest.raises(UnsafeModelError) as info:
            loader(str(evil))
        assert_refused(info.value, marker)


@pytest.mark.parametrize("compress", [0, 3, ("lzma", 3)], ids=str)
def test_malicious_joblib(tmp_path: Path, compress: Any) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.joblib"
    joblib.dump({"model": touch(marker), "arr": np.ones(3)}, path, compress=compress)
    for loader in (joblib_load, safe_load):
        with pytest.raises(UnsafeModelError) as info:
            loader(path)
        assert_refused(info.value, marker)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_malicious_plain_pickle(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([1, touch(marker)], protocol=protocol))
    for loader in (pickle_load, safe_load, joblib_load):
        with pytest.raises(UnsafeModelError) as info:
            loader(path)
        assert_refused(info.value, marker)


def test_lower_threshold_refuses_medium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "ms_loadtest_thresh"
    user_module(tmp_path, monkeypatch, name)
    path = tmp_path / "user.pkl"
    path.write_bytes(newobj_pickle(name, "Net", {"scale": 3}))
    with pytest.raises(UnsafeModelError) as info:
        pickle_load(path, threshold=Severity.MEDIUM)
    assert [f.rule_id for f in info.value.findings] == ["MS113"]


# ---------------------------------------------------------------------------------- policy


def test_non_allowlisted_global_refused_without_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "ms_loadtest_user"
    imported = user_module(tmp_path, monkeypatch, name)
    path = tmp_path / "user.pkl"
    path.write_bytes(newobj_pickle(name, "Net", {"scale": 3}))
    result = modelshield.scan(str(path))
    assert [(f.rule_id, f.severity) for f in result.findings] == [("MS113", Severity.MEDIUM)]
    assert not result.at_or_above(Severity.HIGH) and result.complete
    for loader in (pickle_load, safe_load, joblib_load):
        with pytest.raises(DisallowedGlobalError) as info:
            loader(path)
        assert info.value.name == f"{name}.Net"
        assert isinstance(info.value, pickle.UnpicklingError)
        assert "not on the allowlist" in str(info.value)
    assert not imported.exists() and name not in sys.modules

    entry = PolicyEntry(
        pattern=f"{name}.Net",
        reason="our own class, reviewed",
        category="user",
        severity=Severity.INFO,
    )
    monkeypatch.delitem(sys.modules, name, raising=False)
    cfg = modelshield.Config(allow=(entry,))
    for loader in (pickle_load, safe_load, joblib_load):
        obj = loader(path, config=cfg)
        assert type(obj).__name__ == "Net" and obj.scale == 3
    assert imported.exists()
    sys.modules.pop(name, None)


def test_allow_pattern_entry_for_torch_module_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full-module save of a user class: refused, then loaded once the class is allowed."""
    name = "ms_loadtest_net"
    (tmp_path / f"{name}.py").write_text(
        "import torch\n"
        "class Tiny(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(2, 2)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = __import__(name)
    path = tmp_path / "tiny.pt"
    torch.save(mod.Tiny(), path)
    with pytest.raises(DisallowedGlobalError, match=f"{name}.Tiny"):
        torch_load(path)
    entry = PolicyEntry(
        pattern=f"{name}.*", reason="our model code", category="user", severity=Severity.INFO
    )
    got = torch_load(path, config=modelshield.Config(allow=(entry,)))
    assert isinstance(got, mod.Tiny)
    sys.modules.pop(name, None)


def test_allowing_something_does_not_allow_everything(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(touch(marker), protocol=4))
    entry = PolicyEntry(
        pattern="mypkg.*", reason="unrelated", category="user", severity=Severity.INFO
    )
    with pytest.raises(UnsafeModelError):
        pickle_load(path, config=modelshield.Config(allow=(entry,)))
    # Even below the scanner's radar (threshold CRITICAL+), the unpickler refuses os.system.
    with pytest.raises((UnsafeModelError, DisallowedGlobalError)):
        pickle_load(path, threshold=Severity.CRITICAL)
    assert not marker.exists()


def test_unpickler_enforces_policy_even_if_scan_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: with a scan that reports nothing, os.system is still not imported."""
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(touch(marker), protocol=2))
    real = real_scan_bytes

    def blind_scan(data: bytes, name: str, **kw: Any) -> Any:
        result = real(b"\x80\x04K\x01.", name, **kw)  # the scan of a harmless pickle
        return result

    monkeypatch.setattr(load_mod, "scan_bytes", blind_scan)
    with pytest.raises(DisallowedGlobalError) as info:
        pickle_load(path)
    assert info.value.name in ("os.system", "posix.system")
    assert not marker.exists()


# ---------------------------------------------------------------------------------- no re-read


def test_loads_the_bytes_it_scanned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is swapped for a malicious one right after it was read for the scan."""
    marker = tmp_path / "marker"
    path = tmp_path / "model.pt"
    torch.save({"w": torch.arange(3.0)}, path)
    evil_bytes = evil_torch(tmp_path, marker).read_bytes()
    real = real_scan_bytes
    calls: list[int] = []

    def swapping_scan(data: bytes, name: str, **kw: Any) -> Any:
        calls.append(len(data))
        path.write_bytes(evil_bytes)  # the attacker wins the race on disk
        return real(data, name, **kw)

    monkeypatch.setattr(load_mod, "scan_bytes", swapping_scan)
    got = torch_load(path)
    assert torch.equal(got["w"], torch.arange(3.0))
    assert calls and path.read_bytes() == evil_bytes
    assert not marker.exists()


@pytest.mark.parametrize("loader_name", ["pickle_load", "joblib_load", "safe_load"])
def test_pickle_loaders_load_the_bytes_they_scanned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loader_name: str
) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"ok": np.arange(3)}, protocol=4))
    evil_bytes = pickle.dumps(touch(marker), protocol=4)
    real = real_scan_bytes

    def swapping_scan(data: bytes, name: str, **kw: Any) -> Any:
        path.write_bytes(evil_bytes)
        return real(data, name, **kw)

    monkeypatch.setattr(load_mod, "scan_bytes", swapping_scan)
    got = getattr(load_mod, loader_name)(path)
    assert np.array_equal(got["ok"], np.arange(3))
    assert not marker.exists()


# ---------------------------------------------------------------------------------- incomplete


def test_incomplete_analysis_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Content the scanner could not fully analyse is not loaded (never fail open)."""
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    real = real_scan_bytes

    def partial_scan(data: bytes, name: str, **kw: Any) -> Any:
        result = real(data, name, **kw)
        cov = tuple(
            dataclasses.replace(c, status=CoverageStatus.PARTIAL, reason="limit hit")
            for c in result.coverage
        )
        return dataclasses.replace(result, coverage=cov)

    monkeypatch.setattr(load_mod, "scan_bytes", partial_scan)
    with pytest.raises(UnsafeModelError) as info:
        pickle_load(path)
    assert info.value.findings == ()
    assert "could not be fully analysed" in str(info.value)
    assert "not analysed" in info.value.diagnostics() and "limit hit" in info.value.diagnostics()


def test_malformed_pickle_fails_cleanly(tmp_path: Path) -> None:
    """Opcodes before the garbage are analysed (MS100, below the threshold); load then fails."""
    marker = tmp_path / "marker"
    path = tmp_path / "odd.pkl"
    path.write_bytes(b"\x80\x04K\x01\xff.")
    assert [f.rule_id for f in modelshield.scan(str(path)).findings] == ["MS100"]
    with pytest.raises(pickle.UnpicklingError):
        pickle_load(path)
    # A payload before the garbage is still seen (the real unpickler would run it).
    path.write_bytes(pickle.dumps(touch(marker), protocol=4)[:-1] + b"\xff.")
    with pytest.raises(UnsafeModelError):
        pickle_load(path)
    assert not marker.exists()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        safe_load(tmp_path / "absent.pt")
