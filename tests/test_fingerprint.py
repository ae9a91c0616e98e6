"""``modelshield fingerprint``: one identity for the same weights in any container and order.

The scheme in :mod:`modelshield.fingerprint`'s docstring is reimplemented here from its text with
torch + hashlib (:func:`documented_fingerprint`), so the documentation itself is tested.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from modelshield.cli import main  # noqa: E402
from modelshield.convert import convert  # noqa: E402
from modelshield.fingerprint import SCHEME, fingerprint  # noqa: E402
from modelshield.tensors import ConversionError  # noqa: E402

ST_DTYPES = {
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float64": "F64",
    "int8": "I8",
    "int16": "I16",
    "int32": "I32",
    "int64": "I64",
    "uint8": "U8",
    "bool": "BOOL",
    "complex64": "C64",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}


def documented_fingerprint(tensors: dict[str, Any]) -> str:
    """The scheme as documented, written independently of modelshield."""
    lines = []
    for name, t in tensors.items():
        dtype = ST_DTYPES[str(t.dtype).removeprefix("torch.")]
        data = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()  # CPU is LE
        shape = ",".join(str(d) for d in t.shape)
        lines.append((name.encode("utf-8"), f"{name}\t{dtype}\t{shape}\t{sha256(data)}"))
    lines.sort(key=lambda x: x[0])
    body = "".join(line + "\n" for _, line in lines).encode("utf-8")
    return "sha256:" + hashlib.sha256(body).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def weights() -> dict[str, Any]:
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(6, 8, generator=gen)
    return {
        "encoder.weight": base,
        "encoder.bias": torch.randn(6, generator=gen).to(torch.bfloat16),
        "head.weight": base[:, ::2].t(),  # a non-contiguous view of the same storage
        "counts": torch.arange(7),
        "mask": torch.tensor([True, False, True]),
        "half": torch.randn(2, 3, generator=gen).half(),
        "scale": torch.tensor(0.5, dtype=torch.float64),
        "empty": torch.empty(0, 4),
        "q": (torch.randn(5, generator=gen) * 10).to(torch.int8),
        "f8": torch.randn(4, generator=gen).to(torch.float8_e4m3fn),
        "ünïcode.名前": torch.ones(2, dtype=torch.int16),
    }


def save_pt(path: Path, tensors: dict[str, Any], *, legacy: bool = False) -> Path:
    torch.save(tensors, path, _use_new_zipfile_serialization=not legacy)
    return path


def fp(path: Path) -> str:
    return fingerprint(str(path)).value


# ---------------------------------------------------------------------------------- equality


def test_pt_and_its_conversion(tmp_path: Path) -> None:
    w = weights()
    pt = save_pt(tmp_path / "m.pt", w)
    convert(str(pt), str(tmp_path / "m.safetensors"))
    value = fp(pt)
    assert value.startswith("sha256:") and len(value) == 7 + 64
    assert fp(tmp_path / "m.safetensors") == value
    assert value == documented_fingerprint(w)


def test_scheme_name_and_per_tensor_digests(tmp_path: Path) -> None:
    w = weights()
    result = fingerprint(str(save_pt(tmp_path / "m.pt", w)))
    assert result.scheme == SCHEME == "modelshield-weights-v1"
    by_name = {d.name: d for d in result.tensors}
    assert sorted(by_name) == sorted(w)
    for name, t in w.items():
        data = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        assert by_name[name].sha256 == sha256(data), name
        assert by_name[name].shape == tuple(t.shape)
    assert [d.name.encode() for d in result.tensors] == sorted(n.encode() for n in w)


def test_other_tensor_order(tmp_path: Path) -> None:
    w = weights()
    a = save_pt(tmp_path / "a.pt", w)
    b = save_pt(tmp_path / "b.pt", dict(reversed(list(w.items()))))
    assert a.read_bytes() != b.read_bytes()
    assert fp(a) == fp(b)


def test_legacy_and_zip(tmp_path: Path) -> None:
    w = {k: v for k, v in weights().items() if not k.startswith("f8")}  # torch can't reload those
    assert fp(save_pt(tmp_path / "z.pt", w)) == fp(save_pt(tmp_path / "l.pt", w, legacy=True))
    assert fp(tmp_path / "z.pt") == documented_fingerprint(w)


def test_safetensors_written_by_safetensors(tmp_path: Path) -> None:
    w = weights()
    path = tmp_path / "w.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in w.items()}, str(path))
    assert fp(path) == documented_fingerprint(w)


def test_tied_weights_listed_under_every_name(tmp_path: Path) -> None:
    t = torch.randn(4, 4)
    w = {"embed.weight": t, "lm_head.weight": t, "b": torch.zeros(4)}
    pt = save_pt(tmp_path / "tied.pt", w)
    convert(str(pt), str(tmp_path / "tied.safetensors"))
    assert fp(pt) == fp(tmp_path / "tied.safetensors") == documented_fingerprint(w)
    names = [d.name for d in fingerprint(str(tmp_path / "tied.safetensors")).tensors]
    assert names == ["b", "embed.weight", "lm_head.weight"]
    # ... and equal to untied copies of the same bytes
    untied = save_pt(tmp_path / "untied.pt", {k: v.clone() for k, v in w.items()})
    assert fp(untied) == fp(pt)


def test_npz_npy_and_safetensors(tmp_path: Path) -> None:
    arrays = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b_be": np.arange(5, dtype=">i8"),
        "c": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        "d": np.array(True),
    }
    np.savez(tmp_path / "a.npz", **arrays)  # type: ignore[arg-type]
    np.savez_compressed(tmp_path / "c.npz", **arrays)  # type: ignore[arg-type]
    native = {k: v.astype(v.dtype.newbyteorder("<"), order="C") for k, v in arrays.items()}
    safetensors_numpy.save_file(native, str(tmp_path / "a.safetensors"))
    expected = documented_fingerprint({k: torch.from_numpy(v) for k, v in native.items()})
    assert fp(tmp_path / "a.npz") == fp(tmp_path / "c.npz") == fp(tmp_path / "a.safetensors")
    assert fp(tmp_path / "a.npz") == expected
    np.save(tmp_path / "a.npy", arrays["a"])
    assert fp(tmp_path / "a.npy") == documented_fingerprint({"a": torch.from_numpy(arrays["a"])})


# ---------------------------------------------------------------------------------- changes


def changed(w: dict[str, Any], how: str) -> dict[str, Any]:
    out = {k: v.clone() for k, v in w.items()}
    t = out["encoder.weight"]
    if how == "element":
        t.view(-1)[17] = torch.nextafter(t.view(-1)[17], torch.tensor(float("inf")))
    elif how == "bit_in_int":
        out["counts"][3] ^= 1
    elif how == "dtype":
        out["encoder.weight"] = t.double()
    elif how == "dtype_same_bytes":
        out["encoder.weight"] = t.view(torch.int32)
    elif how == "name":
        out["encoder.weights"] = out.pop("encoder.weight")
    elif how == "shape":
        out["encoder.weight"] = t.reshape(8, 6)
    elif how == "shape_unsqueeze":
        out["encoder.weight"] = t.unsqueeze(0)
    elif how == "scalar_vs_1d":
        out["scale"] = out["scale"].reshape(1)
    elif how == "extra_tensor":
        out["new"] = torch.zeros(1)
    elif how == "dropped_empty":
        del out["empty"]
    else:  # pragma: no cover
        raise AssertionError(how)
    return out


CHANGES = [
    "element",
    "bit_in_int",
    "dtype",
    "dtype_same_bytes",
    "name",
    "shape",
    "shape_unsqueeze",
    "scalar_vs_1d",
    "extra_tensor",
    "dropped_empty",
]


@pytest.mark.parametrize("how", CHANGES)
def test_any_change_changes_it(tmp_path: Path, how: str) -> None:
    w = weights()
    original = fp(save_pt(tmp_path / "a.pt", w))
    w2 = changed(w, how)
    value = fp(save_pt(tmp_path / "b.pt", w2))
    assert value != original
    assert value == documented_fingerprint(w2)


# ---------------------------------------------------------------------------------- errors / CLI


def test_refuses_non_tensor_pickles(tmp_path: Path) -> None:
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(ConversionError):
        fingerprint(str(path))


def test_truncated_npy_is_an_error(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, np.arange(10.0))
    path = tmp_path / "t.npy"
    path.write_bytes(buf.getvalue()[:-4])
    with pytest.raises(ConversionError):
        fingerprint(str(path))


def test_truncated_safetensors_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    safetensors_numpy.save_file({"a": np.arange(10.0)}, str(path))
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(ConversionError):
        fingerprint(str(path))


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = weights()
    pt = save_pt(tmp_path / "m.pt", w)
    convert(str(pt), str(tmp_path / "m.safetensors"))
    assert main(["fingerprint", str(pt), str(tmp_path / "m.safetensors")]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = documented_fingerprint(w)
    assert lines == [f"{expected}  {pt}", f"{expected}  {tmp_path / 'm.safetensors'}"]
    assert main(["fingerprint", "--json", str(pt)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["fingerprint"] == expected and doc["scheme"] == SCHEME
    assert {t["name"] for t in doc["tensors"]} == set(w)
    assert main(["fingerprint", str(tmp_path / "absent.pt")]) == 2
