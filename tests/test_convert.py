"""``modelshield convert``: checkpoints written by the real libraries, compared with what they load.

Every sample is written by ``torch.save`` / ``numpy`` / ``pickle`` from a readable recipe; the
conversion is checked tensor by tensor (dtype, shape, bytes) against
``torch.load(weights_only=True)`` (or ``numpy.load``) of the source and
``safetensors.torch.load_file`` of the output, with the aliases recorded in
``modelshield.aliases`` applied. Malicious samples create a marker file when
they run, so the tests prove nothing was executed.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
from safetensors import safe_open  # noqa: E402

from modelshield import convert as convert_mod  # noqa: E402
from modelshield.cli import main  # noqa: E402
from modelshield.convert import (  # noqa: E402
    ConversionReport,
    RefusedConversionError,
    convert,
    default_output,
)
from modelshield.errors import ModelShieldError, UnsafeInputError  # noqa: E402
from modelshield.findings import Severity  # noqa: E402
from modelshield.tensors import ALIAS_KEY, ConversionError  # noqa: E402

# ---------------------------------------------------------------------------------- helpers


def flatten(obj: object, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Tensor leaves of nested dicts with dotted names (the names convert gives them)."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else str(k))


def comparable(t: Any) -> Any:
    """float8 has no equality kernel on CPU: compare its bytes."""
    if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        return t.contiguous().view(torch.uint8)
    return t


def metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    return dict(meta or {})


def load_converted(path: Path) -> dict[str, Any]:
    """``safetensors.torch.load_file`` plus the tied names from ``modelshield.aliases``."""
    tensors: dict[str, Any] = safetensors_torch.load_file(str(path))
    for alias, target in json.loads(metadata(path).get(ALIAS_KEY, "{}")).items():
        assert alias not in tensors
        tensors[alias] = tensors[target]
    return tensors


def assert_same(expected: Mapping[str, Any], got: Mapping[str, Any]) -> None:
    assert sorted(got) == sorted(expected)
    for name, want in expected.items():
        have = got[name]
        assert have.dtype == want.dtype, name
        assert tuple(have.shape) == tuple(want.shape), name
        assert torch.equal(comparable(have), comparable(want.contiguous())), name


def roundtrip(
    tmp_path: Path, obj: object, *, legacy: bool = False, name: str = "ckpt"
) -> tuple[ConversionReport, dict[str, Any], dict[str, Any]]:
    """Save ``obj`` with torch, convert it; return the report, torch's tensors and ours."""
    src = tmp_path / f"{name}.pt"
    torch.save(obj, src, _use_new_zipfile_serialization=not legacy)
    out = tmp_path / f"{name}.safetensors"
    report = convert(str(src), str(out))
    assert report.verified and report.output == str(out)
    expected = dict(flatten(torch.load(src, weights_only=True)))
    return report, expected, load_converted(out)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name or p.name.startswith("."))


class Reduce:
    """Pickles as ``func(*args)``: unpickling calls ``func``."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def evil_checkpoint(tmp_path: Path, marker: Path) -> Path:
    """A real ``torch.save`` archive whose ``data.pkl`` runs ``os.system('touch marker')``."""
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(4.0)}, good)
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(evil, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                payload = Reduce(os.system, f"touch '{marker}'")
                data = pickle.dumps({"w": payload}, protocol=2)
            zout.writestr(info, data)
    good.unlink()
    return evil


# ---------------------------------------------------------------------------------- dtypes

DTYPES = [
    "float32",
    "float16",
    "bfloat16",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "bool",
    "complex64",
    "float8_e4m3fn",
    "float8_e5m2",
]
# Legacy files store float8 in an untyped storage, which torch itself cannot load back.
LEGACY_DTYPES = [d for d in DTYPES if not d.startswith("float8")]


def sample(dtype_name: str) -> Any:
    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(1)
    values = torch.randn(3, 5, generator=gen, dtype=torch.float64) * 20
    if dtype == torch.bool:
        return values > 0
    if dtype == torch.complex64:
        return torch.complex(values.float(), -values.float())
    return values.to(dtype)


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_dtypes_zip(tmp_path: Path, dtype_name: str) -> None:
    t = sample(dtype_name)
    report, expected, got = roundtrip(tmp_path, {"t": t, "t_row": t[1]})
    assert_same(expected, got)
    assert report.skipped == []


@pytest.mark.parametrize("dtype_name", LEGACY_DTYPES)
def test_dtypes_legacy(tmp_path: Path, dtype_name: str) -> None:
    t = sample(dtype_name)
    _, expected, got = roundtrip(tmp_path, {"t": t, "t_col": t[:, 2]}, legacy=True)
    assert_same(expected, got)


def test_all_dtypes_in_one_checkpoint(tmp_path: Path) -> None:
    obj = {name: sample(name) for name in DTYPES}
    report, expected, got = roundtrip(tmp_path, obj)
    assert_same(expected, got)
    assert report.tensors == len(DTYPES)


# ---------------------------------------------------------------------------------- tied weights


@pytest.mark.parametrize("legacy", [False, True])
def test_tied_weights_stored_once_with_alias(tmp_path: Path, legacy: bool) -> None:
    w = torch.randn(50, 20)
    report, expected, got = roundtrip(
        tmp_path, {"encoder.weight": w, "decoder.weight": w, "bias": torch.zeros(20)}, legacy=legacy
    )
    assert_same(expected, got)
    assert report.aliases == {"decoder.weight": "encoder.weight"}
    out = tmp_path / "ckpt.safetensors"
    assert json.loads(metadata(out)[ALIAS_KEY]) == {"decoder.weight": "encoder.weight"}
    stored = safetensors_torch.load_file(str(out))
    assert sorted(stored) == ["bias", "encoder.weight"]  # the bytes are written once
    assert out.stat().st_size < 50 * 20 * 4 * 2


def test_views_of_one_storage_are_not_aliases(tmp_path: Path) -> None:
    """Two different views of one storage are two tensors, not a tie."""
    base = torch.arange(24.0).reshape(4, 6)
    report, expected, got = roundtrip(tmp_path, {"full": base, "row": base[1], "col": base[:, 3]})
    assert_same(expected, got)
    assert report.aliases == {}


# ---------------------------------------------------------------------------------- views


def views() -> dict[str, Any]:
    base = torch.arange(60, dtype=torch.float32).reshape(5, 12)
    return {
        "transposed": base.t(),
        "step": base[:, ::3],
        "step_rows": base[::2, 1::5],
        "narrow": base.narrow(0, 2, 2),
        "offset_slice": base[3:, 4:],
        "expanded": torch.arange(4.0).expand(3, 4),  # stride 0
        "expanded_col": torch.arange(3.0).unsqueeze(1).expand(3, 5),
        "permuted": torch.arange(24, dtype=torch.int16).reshape(2, 3, 4).permute(2, 0, 1),
        "diag_like": base.as_strided((4,), (13,)),
        "scalar": torch.tensor(3.25, dtype=torch.float64),
        "scalar_view": base[2, 7],
        "empty": torch.empty(0, 7),
        "empty_mid": torch.empty(3, 0, 2, dtype=torch.int64),
        "size_one_dims": torch.arange(6.0).reshape(1, 6, 1)[:, ::2, :],
    }


@pytest.mark.parametrize("legacy", [False, True])
def test_views_and_non_contiguous(tmp_path: Path, legacy: bool) -> None:
    v = views()
    assert not v["transposed"].is_contiguous() and v["expanded"].stride() == (0, 1)
    assert v["narrow"].storage_offset() == 24
    _, expected, got = roundtrip(tmp_path, v, legacy=legacy)
    assert_same(expected, got)
    assert got["scalar"].shape == () and got["empty"].shape == (0, 7)


# ---------------------------------------------------------------------------------- real modules


def tied_lm() -> Any:
    """Embedding + LSTM + a decoder whose weight *is* the embedding's (weight tying)."""
    lm = torch.nn.ModuleDict(
        {
            "embed": torch.nn.Embedding(30, 8),
            "lstm": torch.nn.LSTM(8, 8, num_layers=2),
            "decoder": torch.nn.Linear(8, 30),
        }
    )
    lm["decoder"].weight = lm["embed"].weight
    return lm


MODULES = {
    "transformer": lambda: torch.nn.Transformer(
        d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=32
    ),
    "lstm": lambda: torch.nn.LSTM(6, 10, num_layers=2, bidirectional=True),
    "conv": lambda: torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1)
    ),
    "tied_lm": tied_lm,
}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("kind", sorted(MODULES))
def test_real_module_state_dicts(tmp_path: Path, kind: str, legacy: bool) -> None:
    torch.manual_seed(0)
    module = MODULES[kind]()
    report, expected, got = roundtrip(tmp_path, module.state_dict(), legacy=legacy)
    assert_same(expected, got)
    if kind == "tied_lm":
        assert report.aliases == {"decoder.weight": "embed.weight"}
    # The converted weights load into a fresh module and compute the same thing.
    fresh = MODULES[kind]()
    fresh.load_state_dict(got)
    for a, b in zip(fresh.state_dict().values(), module.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_half_precision_module(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = torch.nn.Linear(7, 3).to(torch.bfloat16)
    sd = module.state_dict()
    sd["head.weight"] = torch.nn.Linear(4, 4).half().weight  # a Parameter, float16
    _, expected, got = roundtrip(tmp_path, sd)
    assert_same(expected, got)


# ---------------------------------------------------------------------------------- nesting


def test_state_dict_key_unwrapped(tmp_path: Path) -> None:
    w = torch.randn(3, 3)
    report, _, got = roundtrip(tmp_path, {"state_dict": {"layer.weight": w}})
    assert_same({"layer.weight": w}, got)
    assert report.skipped == []


def test_non_tensor_entries_reported(tmp_path: Path) -> None:
    src = tmp_path / "mixed.pt"
    torch.save({"w": torch.ones(2), "epoch": 3, "name": "run-7", "sub": {"b": torch.zeros(1)}}, src)
    report = convert(str(src), str(tmp_path / "mixed.safetensors"))
    assert sorted(load_converted(tmp_path / "mixed.safetensors")) == ["sub.b", "w"]
    assert any(s.startswith("epoch") and "3" in s for s in report.skipped)
    assert any(s.startswith("name") and "run-7" in s for s in report.skipped)
    assert json.loads(metadata(tmp_path / "mixed.safetensors")["modelshield.skipped"]) == (
        report.skipped
    )
    with pytest.raises(ConversionError, match="non-tensor"):
        convert(str(src), str(tmp_path / "strict.safetensors"), allow_skipped=False)
    assert not (tmp_path / "strict.safetensors").exists()


def training_checkpoint() -> dict[str, Any]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}


def test_model_key_weights_converted(tmp_path: Path) -> None:
    ckpt = training_checkpoint()
    src = tmp_path / "train.pt"
    torch.save(ckpt, src)
    convert(str(src), str(tmp_path / "train.safetensors"))
    assert_same(dict(ckpt["model"]), load_converted(tmp_path / "train.safetensors"))


def test_model_key_siblings_reported_as_skipped(tmp_path: Path) -> None:
    src = tmp_path / "train.pt"
    torch.save(training_checkpoint(), src)
    report = convert(str(src), str(tmp_path / "train.safetensors"))
    assert any("optimizer" in s for s in report.skipped)
    assert any("epoch" in s for s in report.skipped)
    with pytest.raises(ConversionError):
        convert(str(src), str(tmp_path / "strict.safetensors"), allow_skipped=False)


def test_protocol2_builtin_names(tmp_path: Path) -> None:
    src = tmp_path / "set.pt"
    torch.save({"w": torch.ones(2), "tags": {"a", "b"}}, src)
    assert torch.load(src, weights_only=True)["tags"] == {"a", "b"}
    report = convert(str(src), str(tmp_path / "set.safetensors"))
    assert any(s.startswith("tags") for s in report.skipped)


# ---------------------------------------------------------------------------------- NumPy inputs


def numpy_arrays() -> dict[str, np.ndarray[Any, Any]]:
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    return {
        "f32": base,
        "f16": np.linspace(-2, 2, 7, dtype=np.float16),
        "f64_be": np.arange(6, dtype=">f8").reshape(2, 3),
        "i32_be": np.arange(-4, 4, dtype=">i4"),
        "i16_be": np.arange(5, dtype=">i2"),
        "u8": np.arange(200, 210, dtype=np.uint8),
        "i64": np.arange(-3, 3, dtype=np.int64),
        "bool": np.array([True, False, True]),
        "c64": (np.arange(4) + 1j).astype(np.complex64),
        "fortran": np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
        "transposed": base.T,
        "stepped": base[:, ::2],
        "scalar": np.array(1.5, dtype=np.float64),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


def assert_numpy_same(expected: Mapping[str, np.ndarray[Any, Any]], out: Path) -> None:
    from safetensors.numpy import load_file

    got = load_file(str(out))
    assert sorted(got) == sorted(expected)
    for name, want in expected.items():
        have = got[name]
        assert have.dtype == want.dtype.newbyteorder("="), name
        assert have.dtype.byteorder in ("=", "<", "|"), name  # stored little-endian
        assert have.shape == want.shape, name
        assert np.array_equal(have, want), name


def test_npz(tmp_path: Path) -> None:
    arrays = numpy_arrays()
    savers: dict[str, Callable[..., None]] = {
        "plain": np.savez,
        "compressed": np.savez_compressed,
    }
    for name, save in savers.items():
        src = tmp_path / f"{name}.npz"
        save(src, **arrays)
        convert(str(src), str(tmp_path / f"{name}.safetensors"))
        loaded = np.load(src)
        assert_numpy_same({k: loaded[k] for k in loaded.files}, tmp_path / f"{name}.safetensors")


@pytest.mark.parametrize("key", sorted(numpy_arrays()))
def test_npy(tmp_path: Path, key: str) -> None:
    src = tmp_path / f"{key}.npy"
    np.save(src, numpy_arrays()[key])
    convert(str(src), str(tmp_path / "out.safetensors"))
    assert_numpy_same({key: np.load(src)}, tmp_path / "out.safetensors")


@pytest.mark.parametrize("protocol", [3, 4])
def test_plain_pickle_of_numpy_dict(tmp_path: Path, protocol: int) -> None:
    arrays = numpy_arrays()
    src = tmp_path / "arrays.pkl"
    src.write_bytes(pickle.dumps({"weights": arrays, "step": 10}, protocol=protocol))
    report = convert(str(src), str(tmp_path / "arrays.safetensors"))
    assert_numpy_same(
        {f"weights.{k}": v for k, v in arrays.items()}, tmp_path / "arrays.safetensors"
    )
    assert any(s.startswith("step") for s in report.skipped)


def test_joblib_of_arrays(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    arrays = {"a": np.arange(5.0), "b": np.arange(6, dtype=np.int32).reshape(2, 3)}
    src = tmp_path / "arrays.joblib"
    joblib.dump(arrays, src)
    convert(str(src), str(tmp_path / "arrays.safetensors"))
    assert_numpy_same(arrays, tmp_path / "arrays.safetensors")


# ---------------------------------------------------------------------------------- refusal


def test_malicious_checkpoint_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = evil_checkpoint(tmp_path, marker)
    out = tmp_path / "evil.safetensors"
    with pytest.raises(RefusedConversionError) as info:
        convert(str(evil), str(out))
    assert isinstance(info.value, UnsafeInputError)
    assert "MS101" in str(info.value) and "os.system" in str(info.value)
    assert info.value.result.at_or_above(Severity.HIGH)
    assert not out.exists() and not marker.exists()
    assert leftovers(tmp_path) == []


def test_malicious_checkpoint_forced_still_executes_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = evil_checkpoint(tmp_path, marker)
    out = tmp_path / "evil.safetensors"
    with pytest.raises(ConversionError, match="system"):
        convert(str(evil), str(out), allow_unsafe=True)
    assert not marker.exists()
    assert not out.exists() and leftovers(tmp_path) == []


def test_full_module_save_is_not_converted(tmp_path: Path) -> None:
    """A pickled nn.Module names classes outside the tensor table: refused, not imported."""
    src = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), src)
    with pytest.raises(ConversionError, match="Linear"):
        convert(str(src), str(tmp_path / "module.safetensors"))
    assert not (tmp_path / "module.safetensors").exists()


# ---------------------------------------------------------------------------------- atomicity


def test_failure_in_replace_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "w.pt"
    torch.save({"w": torch.randn(10, 10)}, src)
    out = tmp_path / "w.safetensors"

    def boom(a: str, b: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        convert(str(src), str(out))
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_failure_reading_a_tensor_midway_leaves_nothing(tmp_path: Path) -> None:
    """The second storage record is missing: the header and first tensor were already written."""
    src = tmp_path / "w.pt"
    torch.save({"a": torch.randn(100), "b": torch.randn(100)}, src)
    damaged = tmp_path / "damaged.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(damaged, "w") as zout:
        for info in zin.infolist():
            if not info.filename.endswith("/data/1"):
                zout.writestr(info, zin.read(info.filename))
    out = tmp_path / "damaged.safetensors"
    with pytest.raises(ConversionError, match="missing"):
        convert(str(damaged), str(out))
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_failure_in_verification_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "w.pt"
    torch.save({"w": torch.randn(4)}, src)

    def bad_verify(path: str, groups: object, source: object) -> None:
        raise ConversionError("verification failed for w: data mismatch")

    monkeypatch.setattr(convert_mod, "_verify", bad_verify)
    with pytest.raises(ConversionError, match="verification"):
        convert(str(src), str(tmp_path / "w.safetensors"))
    assert not (tmp_path / "w.safetensors").exists() and leftovers(tmp_path) == []


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    src = tmp_path / "w.pt"
    torch.save({"w": torch.ones(3)}, src)
    out = tmp_path / "w.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(ModelShieldError, match="exists"):
        convert(str(src), str(out))
    assert out.read_bytes() == b"keep me"
    convert(str(src), str(out), overwrite=True)
    assert torch.equal(load_converted(out)["w"], torch.ones(3))


def test_output_may_not_be_the_input(tmp_path: Path) -> None:
    src = tmp_path / "w.pt"
    torch.save({"w": torch.ones(3)}, src)
    with pytest.raises(ModelShieldError, match="overwrite the input"):
        convert(str(src), str(src), overwrite=True)


def test_default_output_name(tmp_path: Path) -> None:
    assert default_output("/x/model.pt") == "/x/model.safetensors"
    assert default_output("/x/model") == "/x/model.safetensors"
    src = tmp_path / "model.bin"
    torch.save({"w": torch.ones(1)}, src)
    report = convert(str(src))
    assert report.output == str(tmp_path / "model.safetensors") and Path(report.output).exists()


def test_header_is_valid_safetensors(tmp_path: Path) -> None:
    """8-byte aligned header, contiguous offsets, metadata strings only."""
    src = tmp_path / "w.pt"
    torch.save({"b": torch.ones(3, dtype=torch.float16), "a": torch.arange(5)}, src)
    out = tmp_path / "w.safetensors"
    report = convert(str(src), str(out))
    raw = out.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__")
    assert meta["format"] == "pt" and all(isinstance(v, str) for v in meta.values())
    spans = sorted(tuple(v["data_offsets"]) for v in header.values())
    assert spans[0][0] == 0 and spans[-1][1] == len(raw) - 8 - n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert report.bytes_written == len(raw)


def test_convert_does_not_need_torch(tmp_path: Path) -> None:
    src = tmp_path / "w.pt"
    torch.save({"w": torch.arange(6.0).reshape(2, 3).t(), "e": torch.ones(2)}, src)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from modelshield.convert import convert\n"
        f"r = convert({str(src)!r}, {str(tmp_path / 'w.safetensors')!r})\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(r.tensors)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2"
    assert_same(
        {"w": torch.arange(6.0).reshape(2, 3).t(), "e": torch.ones(2)},
        load_converted(tmp_path / "w.safetensors"),
    )


# ---------------------------------------------------------------------------------- CLI


def test_cli_convert_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = torch.randn(4, 4)
    src = tmp_path / "m.pt"
    torch.save({"a": w, "b": w, "epoch": 1}, src)
    out = tmp_path / "m.safetensors"
    assert main(["convert", str(src), str(out)]) == 0
    cap = capsys.readouterr()
    assert "wrote" in cap.out and "verified" in cap.out
    assert "tied: b -> a" in cap.out
    assert "left out (not a tensor): epoch" in cap.err
    assert_same({"a": w, "b": w}, load_converted(out))


def test_cli_convert_existing_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "m.pt"
    torch.save({"a": torch.ones(2)}, src)
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"x")
    assert main(["convert", str(src), str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["convert", str(src), str(out), "--overwrite"]) == 0


def test_cli_convert_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "m.pt"
    torch.save({"a": torch.ones(2), "epoch": 1}, src)
    assert main(["convert", str(src), str(tmp_path / "m.safetensors"), "--strict"]) == 2
    assert "non-tensor" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()


def test_cli_convert_malicious(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "marker"
    evil = evil_checkpoint(tmp_path, marker)
    out = tmp_path / "evil.safetensors"
    assert main(["convert", str(evil), str(out)]) == 1
    err = capsys.readouterr().err
    assert "refused to convert" in err and "--unsafe-convert-flagged" in err
    assert main(["convert", str(evil), str(out), "--unsafe-convert-flagged"]) == 2
    assert "not a tensor or container type" in capsys.readouterr().err
    assert not marker.exists() and not out.exists() and leftovers(tmp_path) == []


def test_cli_convert_missing_and_unreadable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["convert", str(tmp_path / "nope.pt")]) == 2
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"just some text, not a model\n" * 4)
    assert main(["convert", str(junk)]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "junk.safetensors").exists()


def test_npz_in_memory_recipe_matches_numpy() -> None:
    """Sanity check of the recipe itself: big-endian arrays really are big-endian."""
    buf = io.BytesIO()
    np.save(buf, numpy_arrays()["f64_be"])
    assert b"'>f8'" in buf.getvalue()[:128]
