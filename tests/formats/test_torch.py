"""PyTorch containers: ``torch.save`` zip checkpoints, TorchScript archives, legacy formats.

Benign samples are written by the real libraries and must scan clean. Every malicious sample is
first *proven*: the real loader (``torch.load(..., weights_only=False)`` or ``torch.jit.load``)
runs its payload, which creates a marker file; only then is the scanner asked to flag it. Where
the real loader refuses a sample, the test says so and checks detection only.

How torch 2.13 reads a zip checkpoint (observed here, and asserted by the tests below):

* only a file that *starts* with ``PK\\x03\\x04`` is read as a zip; anything else goes to the
  legacy path (tar, then stacked pickles), so a pickle followed by a checkpoint is a polyglot;
* CRCs are not checked, local-header flag bits and names are ignored (the central directory's
  name and the local header's lengths are used);
* central-directory flag bits 0x1 (encrypted), 0x20 (patch), 0x40 (strong encryption) and 0x2000
  make it refuse the member or the archive;
* every member must sit in the folder of the first central-directory entry, whatever its name;
  records are looked up in that folder case-insensitively (``archive/DATA.PKL`` is data.pkl);
* with duplicate names, miniz's binary search picks one of them depending on the entry count.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import random
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch_recipes import (
    DEFLATED,
    FLAG_ENCRYPTED,
    Member,
    Reduce,
    affine_torchscript,
    assert_clean,
    assert_flagged,
    benign_pickle,
    describe,
    evil_checkpoint,
    evil_pickle,
    has_rule,
    jit_load,
    legacy_tar,
    members_of,
    renamed_folder,
    sample_members,
    save_on_load_torchscript,
    shell_touch,
    torch_checkpoint,
    torchscript_archive,
    with_pickle,
    write_zip,
)

import modelshield
from modelshield import ScanResult, Severity

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning"
)

# Findings benign full-module saves may carry: classes that are not on the allowlist.
USER_CLASS_RULES = ("MS113", "MS105")


def write_and_scan(tmp_path: Path, data: bytes, name: str = "model.pt") -> tuple[Path, ScanResult]:
    path = tmp_path / name
    path.write_bytes(data)
    return path, modelshield.scan(path)


def fire(load: Callable[[], object], marker: Path) -> None:
    """Run the real loader; the payload must have created ``marker`` (whether or not the loader
    fails afterwards, as it does for deliberately malformed files)."""
    assert not marker.exists()
    with contextlib.suppress(Exception):  # the payload runs before the loader gives up
        load()
    assert marker.exists(), "the real loader did not run the payload"


def torch_load(path: Path) -> Callable[[], object]:
    return lambda: torch.load(path, weights_only=False)


def refuses(load: Callable[[], object]) -> str:
    """The loader's error message (the test fails if it loads)."""
    with pytest.raises(Exception) as info:  # any refusal
        load()
    return str(info.value)


# ============================================================================ benign samples

DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int8,
    torch.bool,
    torch.complex64,
    torch.float64,
    torch.int64,
    torch.uint8,
]
if hasattr(torch, "float8_e4m3fn"):
    DTYPES.append(torch.float8_e4m3fn)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_state_dict_of_each_dtype_is_clean(tmp_path: Path, dtype: torch.dtype) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6).to(dtype)
    sd = {"layer.weight": base, "layer.bias": base[0].clone(), "scalar": base[1, 1].clone()}
    path, result = write_and_scan(tmp_path, torch_checkpoint(sd))
    torch.load(path, weights_only=True)  # PyTorch itself considers it plain weights
    assert_clean(result)


def test_tied_weights_and_views_are_clean(tmp_path: Path) -> None:
    shared = torch.randn(8, 8)
    sd = {
        "embed.weight": shared,
        "head.weight": shared,  # tied: one storage, two references
        "transposed": shared.t(),  # non-contiguous view
        "strided": shared[::2, 1::3],
        "slice": shared[2:5],
        "expanded": torch.ones(1, 4).expand(3, 4),
    }
    path, result = write_and_scan(tmp_path, torch_checkpoint(sd))
    loaded = torch.load(path, weights_only=True)
    assert loaded["head.weight"].data_ptr() == loaded["embed.weight"].data_ptr()
    assert_clean(result)


def training_checkpoint() -> dict[str, Any]:
    """What training loops and frameworks write: model, optimizer, scheduler and RNG states."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    sched.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": 3,
        "global_step": 1200,
        "best_metric": 0.875,
        "rng": torch.get_rng_state(),
        "cuda_rng": [],
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
        "hparams": {"lr": 1e-3, "betas": (0.9, 0.999), "name": "run-7", "tags": ["a", "b"]},
    }


def test_training_checkpoint_is_clean(tmp_path: Path) -> None:
    path, result = write_and_scan(tmp_path, torch_checkpoint(training_checkpoint()), "last.ckpt")
    torch.load(path, weights_only=False)
    assert_clean(result)


def test_sgd_momentum_and_plateau_scheduler_are_clean(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    plateau.step(1.0)
    ckpt = {"optimizer": opt.state_dict(), "scheduler": plateau.state_dict()}
    _, result = write_and_scan(tmp_path, torch_checkpoint(ckpt))
    assert_clean(result)


MODULES: dict[str, Callable[[], torch.nn.Module]] = {
    "Linear": lambda: torch.nn.Linear(4, 3),
    "Conv2d": lambda: torch.nn.Conv2d(3, 4, kernel_size=3, padding=1),
    "LSTM": lambda: torch.nn.LSTM(4, 8, num_layers=2, batch_first=True),
    "TransformerEncoderLayer": lambda: torch.nn.TransformerEncoderLayer(
        d_model=8, nhead=2, dim_feedforward=16, batch_first=True
    ),
    "Sequential": lambda: torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3),
        torch.nn.BatchNorm2d(2),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.1),
    ),
}


@pytest.mark.parametrize("kind", sorted(MODULES))
def test_full_module_save_is_clean(tmp_path: Path, kind: str) -> None:
    # torch.save(model): the pickle names torch.nn classes (no user classes here).
    path, result = write_and_scan(tmp_path, torch_checkpoint(MODULES[kind]()), "model.pth")
    assert isinstance(torch.load(path, weights_only=False), torch.nn.Module)
    assert_clean(result, allow=USER_CLASS_RULES)
    user = [f for f in result.findings if f.rule_id in USER_CLASS_RULES]
    assert not user, f"torch.nn classes reported as unknown classes:\n{describe(result)}"


@pytest.mark.parametrize("name", ["model.pt", "model.pth", "pytorch_model.bin", "x.ckpt", "model"])
def test_any_file_name_is_read_as_a_checkpoint(tmp_path: Path, name: str) -> None:
    _, result = write_and_scan(tmp_path, torch_checkpoint({"w": torch.ones(3)}), name)
    assert_clean(result)
    assert any(c.format == "pytorch" for c in result.coverage), result.coverage


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_protocols_are_clean(tmp_path: Path, protocol: int) -> None:
    data = torch_checkpoint(training_checkpoint(), pickle_protocol=protocol)
    _, result = write_and_scan(tmp_path, data)
    assert_clean(result)


def test_legacy_format_is_clean(tmp_path: Path) -> None:
    # Pre-1.6 layout: magic number, protocol, sys_info and the object pickles, storage keys,
    # then raw storage bytes.
    data = torch_checkpoint(training_checkpoint(), _use_new_zipfile_serialization=False)
    assert not data.startswith(b"PK")
    path, result = write_and_scan(tmp_path, data, "legacy.pt")
    torch.load(path, weights_only=False)
    assert_clean(result)


def test_legacy_full_module_is_clean(tmp_path: Path) -> None:
    data = torch_checkpoint(MODULES["Sequential"](), _use_new_zipfile_serialization=False)
    _, result = write_and_scan(tmp_path, data, "legacy.pt")
    assert_clean(result)


def _benign_torchscript_is_reported_as_info(result: ScanResult) -> None:
    assert result.complete, describe(result)
    assert has_rule(result, "MS204"), describe(result)
    ts = [f for f in result.findings if f.rule_id == "MS204"]
    assert all(f.severity is Severity.INFO for f in ts), describe(result)


def test_scripted_module_is_reported_as_torchscript_only(tmp_path: Path) -> None:
    path, result = write_and_scan(tmp_path, affine_torchscript())
    jit_load(path)
    _benign_torchscript_is_reported_as_info(result)
    assert_clean(result, allow=("MS113",))


def test_traced_module_is_reported_as_torchscript_only(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh())
    buf = io.BytesIO()
    traced = torch.jit.trace(model, torch.randn(2, 4))  # type: ignore[no-untyped-call]
    torch.jit.save(traced, buf)
    path, result = write_and_scan(tmp_path, buf.getvalue())
    jit_load(path)
    _benign_torchscript_is_reported_as_info(result)
    assert_clean(result, allow=("MS113",))


def test_torchscript_compiled_classes_are_not_unknown_classes(tmp_path: Path) -> None:
    _, result = write_and_scan(tmp_path, affine_torchscript())
    assert_clean(result)


# ============================================================================ zip checkpoints


@pytest.mark.parametrize("method", [0, DEFLATED], ids=["stored", "deflated"])
def test_rewritten_data_pkl_runs_and_is_flagged(tmp_path: Path, method: int) -> None:
    marker = tmp_path / "marker"
    path, result = write_and_scan(tmp_path, evil_checkpoint(marker, method=method))
    fire(torch_load(path), marker)
    assert_flagged(result, "os.system", member="archive/data.pkl")


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_data_pkl_at_other_protocols_is_flagged(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "marker"
    data = write_zip(with_pickle(sample_members(), evil_pickle(marker, protocol)))
    path, result = write_and_scan(tmp_path, data)
    fire(torch_load(path), marker)
    assert_flagged(result, "os.system")


def test_bad_crc_is_flagged(tmp_path: Path) -> None:
    """CVE-2025-10156 (GHSA-mjqp-26hc-grxg): a wrong CRC makes ``zipfile`` raise, so picklescan
    stopped scanning; PyTorch's miniz is built without CRC checks and loads the member."""
    marker = tmp_path / "marker"
    path, result = write_and_scan(tmp_path, evil_checkpoint(marker, crc=0xDEADBEEF))
    with zipfile.ZipFile(path) as z, pytest.raises(zipfile.BadZipFile, match="CRC"):
        z.read("archive/data.pkl")
    fire(torch_load(path), marker)
    assert_flagged(result, "os.system")


def test_bad_crc_on_every_member_is_flagged(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    members = [replace(m, crc=0) for m in with_pickle(sample_members(), evil_pickle(marker))]
    path, result = write_and_scan(tmp_path, write_zip(members))
    fire(torch_load(path), marker)
    assert_flagged(result, "os.system")
    assert result.complete


@pytest.mark.parametrize("flags", [0x1, 0x8, 0x20, 0x40, 0x2000], ids=hex)
def test_local_header_flag_bits_are_ignored_by_torch_and_flagged(
    tmp_path: Path, flags: int
) -> None:
    """CVE-2025-1945 (GHSA-w8jq-xcqf-f792): flipped ZIP flag bits hid the pickle from picklescan
    while ``torch.load`` still loaded it. torch 2.13 ignores every bit of the local header."""
    marker = tmp_path / "marker"
    path, result = write_and_scan(tmp_path, evil_checkpoint(marker, local_flags=flags))
    fire(torch_load(path), marker)
    assert_flagged(result, "os.system")


@pytest.mark.parametrize("flags", [0x2, 0x4, 0x8, 0x806], ids=hex)
def test_harmless_central_flag_bits_are_ignored_by_torch_and_flagged(
    tmp_path: Path, flags: int
) -> None:
    marker = tmp_path / "marker"
    path, result = write_and_scan(tmp_path, evil_checkpoint(marker, flags=flags))
    fire(torch_load(path), marker)
    assert_flagged(result, "os.system")


@pytest.mark.parametrize("flags", [FLAG_ENCRYPTED, 0x40, 0x20, 0x2000], ids=hex)
def test_central_encryption_and_patch_bits_are_flagged_though_torch_refuses(
    tmp_path: Path, flags: int
) -> None:
    """Detection only: torch 2.13's miniz refuses encrypted/patched members ("unsupported
    encryption"/"unsupported feature"), unlike what older readers did; the bytes are still a
    malicious pickle, and the scanner still reports it (another reader may ignore the bit)."""
    marker = tmp_path / "marker"
    path, result = write_and_scan(tmp_path, evil_checkpoint(marker, flags=flags))
    assert "unsupported" in refuses(torch_load(path))
    assert not marker.exists()
    assert_flagged(result, "os.system")
    if flags == FLAG_ENCRYPTED:
        with zipfile.ZipFile(path) as z, pytest.raises(RuntimeError, match="encrypted"):
            z.read("archive/data.pkl")
        assert_flagged(result, "encrypted-flag", ("MS201",), threshold=Severity.MEDIUM)


@pytest.mark.parametrize("local_name", ["archive/other.pkl", "archive/data.pkl.with.longer.name"])
def test_local_header_name_mismatch_is_flagged(tmp_path: Path, local_name: str) -> None:
    """``zipfile`` refuses a member whose local header names another file; miniz uses the
    central directory's name and only the local name's *length* (to find the data)."""
    marker = tmp_path / "marker"
    path, result = write_and_scan(tmp_path, evil_checkpoint(marker, local_name=local_name))
    with zipfile.ZipFile(path) as z, pytest.raises(zipfile.BadZipFile, match="File name"):
        z.read("archive/data.pkl")
    fire(torch_load(path), marker)
    assert_flagged(result, "os.system")
    assert_flagged(result, "name-mismatch", ("MS201",), threshold=Severity.MEDIUM)


@pytest.mark.parametrize("folder", ["weird name", "a..b", "données", "ARCHIVE", "x.pt"])
def test_odd_record_folder_names_are_flagged(tmp_path: Path, folder: str) -> None:
    marker = tmp_path / "marker"
    data = write_zip(with_pickle(renamed_folder(sample_members(), folder), evil_pickle(marker)))
    path, result = write_and_scan(tmp_path, data)
    fire(torch_load(path), marker)
    assert_flagged(result, "os.system", member=f"{folder}/data.pkl")


@pytest.mark.parametrize("folder", ["..", ""])
def test_escaping_record_folder_is_flagged(tmp_path: Path, folder: str) -> None:
    # "../data.pkl" and "/data.pkl": torch loads them; extraction would escape the directory.
    marker = tmp_path / "marker"
    data = write_zip(with_pickle(renamed_folder(sample_members(), folder), evil_pickle(marker)))
    path, result = write_and_scan(tmp_path, data)
    fire(torch_load(path), marker)
    assert_flagged(result, "os.system")
    assert has_rule(result, "MS202", Severity.HIGH), describe(result)


def test_nested_record_folder_is_refused_by_torch(tmp_path: Path) -> None:
    # The record folder is the first path component only: "x/y/data.pkl" has no "x/version".
    marker = tmp_path / "marker"
    data = write_zip(with_pickle(renamed_folder(sample_members(), "x/y"), evil_pickle(marker)))
    path, result = write_and_scan(tmp_path, data)
    assert "version" in refuses(torch_load(path))
    assert_flagged(result, "os.system")


def test_members_outside_the_first_entrys_folder_are_refused_by_torch(tmp_path: Path) -> None:
    # The record folder is that of the first central-directory entry, and torch 2.13 refuses an
    # archive with any member elsewhere: a decoy folder cannot redirect which data.pkl it reads.
    marker = tmp_path / "marker"
    real = renamed_folder(with_pickle(sample_members(), evil_pickle(marker)), "a")
    decoy = [Member("b/data.pkl", benign_pickle())]
    path, result = write_and_scan(tmp_path, write_zip(real + decoy))
    assert "not in a subdirectory" in refuses(torch_load(path))
    assert not marker.exists()
    assert_flagged(result, "os.system", member="a/data.pkl")


def test_upper_case_data_pkl_is_flagged(tmp_path: Path) -> None:
    """miniz looks records up case-insensitively: ``archive/DATA.PKL`` is data.pkl to PyTorch,
    while zipfile-based scanners looking for ``data.pkl`` never open it (picklescan/modelscan
    case-desync PoC, huggingface.co/pauliquib/picklescan-zip-case-desync-poc)."""
    marker = tmp_path / "marker"
    members = [
        replace(m, name="archive/DATA.PKL", data=evil_pickle(marker))
        if m.name.endswith("/data.pkl")
        else m
        for m in sample_members()
    ]
    path, result = write_and_scan(tmp_path, write_zip(members))
    with zipfile.ZipFile(path) as z, pytest.raises(KeyError):
        z.getinfo("archive/data.pkl")
    fire(torch_load(path), marker)
    assert_flagged(result, "os.system", member="archive/DATA.PKL")


def _duplicated(marker: Path, evil_first: bool, extra: int, upper: bool) -> bytes:
    out: list[Member] = []
    for m in sample_members():
        if m.name.endswith("/data.pkl"):
            evil = replace(m, data=evil_pickle(marker))
            if upper:
                evil = replace(evil, name="archive/Data.Pkl")
            good = replace(m, data=benign_pickle())
            out += [evil, good] if evil_first else [good, evil]
        else:
            out.append(m)
    out += [Member(f"archive/extra{i}", b"x") for i in range(extra)]
    return write_zip(out)


@pytest.mark.parametrize("upper", [False, True], ids=["same-case", "other-case"])
def test_duplicate_data_pkl_is_flagged_whichever_torch_reads(tmp_path: Path, upper: bool) -> None:
    """Two members named data.pkl (or differing only in case): loaders disagree on which one
    they read (zipfile keeps the last; miniz's binary search depends on the entry count), so
    the scanner must flag the malicious one wherever it is."""
    ran = []
    for evil_first in (True, False):
        for extra in (0, 5):
            marker = tmp_path / f"marker-{evil_first}-{extra}"
            data = _duplicated(marker, evil_first, extra, upper)
            path, result = write_and_scan(tmp_path, data, f"dup-{evil_first}-{extra}.pt")
            with contextlib.suppress(Exception):
                torch.load(path, weights_only=False)
            ran.append(marker.exists())
            assert_flagged(result, "os.system")
            assert_flagged(result, "duplicate-name", ("MS201",), threshold=Severity.MEDIUM)
    assert any(ran), "torch never read the malicious duplicate"
    assert not all(ran), "torch always read the malicious duplicate (the trick is moot)"


def test_prepended_junk_is_flagged(tmp_path: Path) -> None:
    """Detection only: data before ``PK\\x03\\x04`` sends torch.load down the legacy path,
    which fails on the junk before anything runs; Python's zipfile (and so zip-based tools)
    still opens the archive, whose data.pkl is malicious."""
    marker = tmp_path / "marker"
    data = write_zip(with_pickle(sample_members(), evil_pickle(marker)), prefix=b"JUNK" * 8)
    path, result = write_and_scan(tmp_path, data)
    with zipfile.ZipFile(path) as z:
        assert z.read("archive/data.pkl") == evil_pickle(marker)
    refuses(torch_load(path))
    assert not marker.exists()
    assert_flagged(result, "os.system")
    assert_flagged(result, "prepended-data", ("MS201",), threshold=Severity.MEDIUM)


@pytest.mark.parametrize("archive", ["benign", "malicious"])
def test_pickle_before_a_checkpoint_is_a_flagged_polyglot(tmp_path: Path, archive: str) -> None:
    """A pickle at byte 0 followed by a valid checkpoint: torch.load runs the pickle (legacy
    path), zip-based tools see only the archive. Both readings are analysed (MS200)."""
    marker = tmp_path / "marker"
    zip_marker = tmp_path / "zip-marker"
    tail = torch_checkpoint({"w": torch.ones(3)})
    if archive == "malicious":
        tail = write_zip(with_pickle(members_of(tail), evil_pickle(zip_marker)))
    path, result = write_and_scan(tmp_path, evil_pickle(marker) + tail)
    with zipfile.ZipFile(path) as z:
        assert "archive/data.pkl" in z.namelist()
    fire(torch_load(path), marker)
    assert_flagged(result, "os.system")
    assert has_rule(result, "MS200", Severity.HIGH), describe(result)
    if archive == "malicious":
        assert_flagged(result, "os.system", member="archive/data.pkl")


def test_checkpoint_named_safetensors_is_flagged(tmp_path: Path) -> None:
    """torch.load(path) hands ``*.safetensors`` paths to safetensors, but an open file (or any
    other loader) gets the zip checkpoint: the name disguises a pickle (MS205)."""
    marker = tmp_path / "marker"
    path, result = write_and_scan(tmp_path, evil_checkpoint(marker), "model.safetensors")

    def load_open_file() -> object:
        with path.open("rb") as fh:
            return torch.load(fh, weights_only=False)

    fire(load_open_file, marker)
    assert_flagged(result, "os.system")
    assert has_rule(result, "MS205", Severity.MEDIUM), describe(result)


def test_benign_checkpoint_named_safetensors_is_reported(tmp_path: Path) -> None:
    _, result = write_and_scan(
        tmp_path, torch_checkpoint({"w": torch.ones(2)}), "model.safetensors"
    )
    assert has_rule(result, "MS205", Severity.MEDIUM), describe(result)


def test_upper_case_checkpoint_named_safetensors_is_reported(tmp_path: Path) -> None:
    members = [replace(m, name=m.name.replace("data.pkl", "DATA.PKL")) for m in sample_members()]
    path, result = write_and_scan(tmp_path, write_zip(members), "model.safetensors")
    with path.open("rb") as fh:
        torch.load(fh, weights_only=True)  # a real checkpoint to torch
    assert has_rule(result, "MS205", Severity.MEDIUM), describe(result)


def test_extra_pickle_member_is_flagged(tmp_path: Path) -> None:
    """Detection only: torch.load reads only data.pkl, but model code may load any other
    member (CVE-2025-1889, GHSA-769v-p64c-89pr: pickles with non-standard names were skipped)."""
    marker = tmp_path / "marker"
    members = [*sample_members(), Member("archive/extra/config.bin", evil_pickle(marker))]
    path, result = write_and_scan(tmp_path, write_zip(members))
    torch.load(path, weights_only=False)
    assert not marker.exists()
    assert_flagged(result, "os.system", member="archive/extra/config.bin")


def test_storage_records_are_raw_bytes_to_torch(tmp_path: Path) -> None:
    # A pickle stored as a tensor record is never unpickled: torch checks its size and fails.
    marker = tmp_path / "marker"
    members = [
        replace(m, data=evil_pickle(marker)) if m.name == "archive/data/0" else m
        for m in sample_members()
    ]
    path, _ = write_and_scan(tmp_path, write_zip(members))
    assert "size" in refuses(torch_load(path))
    assert not marker.exists()


# ============================================================================ legacy formats

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001


def _stacked(marker: Path, where: str) -> bytes:
    """The pre-1.6 layout with the payload in one of its five pickles."""
    evil = evil_pickle(marker)
    parts = {
        "magic": pickle.dumps(MAGIC_NUMBER, protocol=2),
        "protocol": pickle.dumps(PROTOCOL_VERSION, protocol=2),
        "sys_info": pickle.dumps(
            {"protocol_version": PROTOCOL_VERSION, "little_endian": True}, protocol=2
        ),
        "object": pickle.dumps({"epoch": 1}, protocol=2),
        "storage_keys": pickle.dumps([], protocol=2),
    }
    parts[where] = evil
    return b"".join(parts.values())


def test_legacy_save_of_a_reduce_object_is_flagged(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    data = torch_checkpoint(
        Reduce(os.system, shell_touch(marker)), _use_new_zipfile_serialization=False
    )
    path, result = write_and_scan(tmp_path, data, "legacy.pth")
    fire(torch_load(path), marker)
    assert_flagged(result, "os.system")


@pytest.mark.parametrize("where", ["magic", "protocol", "sys_info", "object", "storage_keys"])
def test_legacy_payload_in_any_of_the_stacked_pickles_is_flagged(
    tmp_path: Path, where: str
) -> None:
    marker = tmp_path / "marker"
    path, result = write_and_scan(tmp_path, _stacked(marker, where), "legacy.bin")
    fire(torch_load(path), marker)
    assert_flagged(result, "os.system")


def test_legacy_payload_in_a_real_checkpoints_object_pickle_is_flagged(tmp_path: Path) -> None:
    # A genuine legacy save with tensors whose object pickle is swapped for the payload.
    marker = tmp_path / "marker"
    real = torch_checkpoint({"w": torch.ones(4)}, _use_new_zipfile_serialization=False)
    head = len(pickle.dumps(MAGIC_NUMBER, protocol=2)) + len(
        pickle.dumps(PROTOCOL_VERSION, protocol=2)
    )
    stream = io.BytesIO(real[head:])
    sys_info = pickle.load(stream)
    data = real[:head] + pickle.dumps(sys_info, protocol=2) + evil_pickle(marker)
    path, result = write_and_scan(tmp_path, data, "legacy.pt")
    fire(torch_load(path), marker)
    assert_flagged(result, "os.system")


def _storages_with_payload(marker: Path, at: int) -> bytes:
    # "storages": a count, one record per storage, then the list of storage views.
    parts = [pickle.dumps(0, protocol=2), pickle.dumps([], protocol=2)]
    parts[at] = evil_pickle(marker)
    return b"".join(parts)


TAR_MEMBER = {
    "pickle": "pickle",
    "storages-count": "storages",
    "storage-views": "storages",
    "tensors": "tensors",
}


@pytest.mark.parametrize("member", sorted(TAR_MEMBER))
def test_legacy_tar_payload_is_flagged(tmp_path: Path, member: str) -> None:
    """The tar layout of PyTorch < 0.4 (``sys_info``, ``pickle``, ``storages``, ``tensors``):
    torch 2.13 still tries it first for any file at offset 0 and unpickles ``storages``,
    ``tensors`` and ``pickle``."""
    marker = tmp_path / "marker"
    if member == "pickle":
        data = legacy_tar(evil_pickle(marker))
    elif member == "tensors":
        data = legacy_tar(benign_pickle(), tensors=evil_pickle(marker))
    else:
        at = 0 if member == "storages-count" else 1
        data = legacy_tar(benign_pickle(), storages=_storages_with_payload(marker, at))
    path, result = write_and_scan(tmp_path, data, "old.pt")
    fire(torch_load(path), marker)
    assert_flagged(result, "os.system", member=TAR_MEMBER[member])


def test_legacy_tar_sys_info_payload_is_flagged(tmp_path: Path) -> None:
    # Detection only: torch no longer reads sys_info from the tar layout.
    marker = tmp_path / "marker"
    path, result = write_and_scan(
        tmp_path, legacy_tar(benign_pickle(), sys_info=evil_pickle(marker))
    )
    torch.load(path, weights_only=False)
    assert not marker.exists()
    assert_flagged(result, "os.system", member="sys_info")


def test_benign_legacy_tar_is_clean(tmp_path: Path) -> None:
    path, result = write_and_scan(tmp_path, legacy_tar(benign_pickle()), "old.pt")
    assert torch.load(path, weights_only=False) == {"epoch": 3, "note": "benign"}
    assert_clean(result)


# ============================================================================ TorchScript


def test_torchscript_setstate_that_writes_a_file_is_flagged(tmp_path: Path) -> None:
    """TorchScript ``__setstate__`` runs inside torch.jit.load; this one calls torch.save."""
    marker = tmp_path / "marker"
    data = save_on_load_torchscript(marker)
    path, result = write_and_scan(tmp_path, data)
    fire(lambda: jit_load(path), marker)
    marker.unlink()
    fire(torch_load(path), marker)  # torch.load hands TorchScript archives to torch.jit.load
    assert_flagged(result, "save", ("MS204",), member=".py")
    assert not result.is_clean()


@pytest.mark.parametrize("rename", ["/code/->/CODE/", ".py->.PY"])
def test_torchscript_code_with_other_case_is_flagged(tmp_path: Path, rename: str) -> None:
    marker = tmp_path / "marker"
    old, new = rename.split("->")
    members = [
        replace(m, name=m.name.replace(old, new)) if "/code/" in m.name else m
        for m in members_of(save_on_load_torchscript(marker))
    ]
    path, result = write_and_scan(tmp_path, write_zip(members))
    fire(lambda: jit_load(path), marker)
    assert_flagged(result, "save", ("MS204",))


def _edit_code(members: list[Member], old: str, new: str) -> list[Member]:
    out = []
    for m in members:
        if "/code/" in m.name and m.name.endswith(".py"):
            source = m.data.decode()
            assert old in source
            m = replace(m, data=source.replace(old, new).encode())
        out.append(m)
    return out


def test_torchscript_custom_operator_is_reported(tmp_path: Path) -> None:
    """Detection only: ``ops.evil.run`` needs a custom operator library loaded in the process
    (torch.jit.load refuses the unknown op here); with one, its native code runs."""
    members = _edit_code(
        members_of(affine_torchscript()), "torch.mul(x, weight)", "ops.evil.run(x, weight)"
    )
    path, result = write_and_scan(tmp_path, write_zip(members))
    assert "evil::run" in refuses(lambda: jit_load(path))
    assert_flagged(result, "evil::run", ("MS204",), threshold=Severity.MEDIUM, member=".py")


@pytest.mark.parametrize("member", ["/constants.pkl", "/data.pkl", ".py.debug_pkl"])
def test_torchscript_pickles_are_flagged(tmp_path: Path, member: str) -> None:
    """Detection only: torch.jit.load unpickles constants.pkl and data.pkl with a restricted
    C++ unpickler that resolves only TorchScript types ("Unknown type name 'posix.system'"), and
    reads debug_pkl only for error messages. The pickles are still analysed."""
    marker = tmp_path / "marker"
    members = [
        replace(m, data=evil_pickle(marker)) if m.name.endswith(member) else m
        for m in members_of(affine_torchscript())
    ]
    path, result = write_and_scan(tmp_path, write_zip(members))
    try:
        jit_load(path)
    except RuntimeError as exc:
        assert "Unknown type name" in str(exc)
    assert not marker.exists()
    assert_flagged(result, "os.system", member=member)


# ============================================================================ bounded reading


def test_large_checkpoint_reads_only_the_pickle(tmp_path: Path) -> None:
    # ~200 MB of tensors: the scanner reads the central directory and data.pkl, not storages.
    sd = {f"layer{i}.weight": torch.zeros(5_000_000) for i in range(10)}
    path = tmp_path / "big.pt"
    torch.save(sd, path)
    del sd
    assert path.stat().st_size > 190_000_000
    result = modelshield.scan(path)
    assert_clean(result)
    assert result.bytes_read < 5_000_000, result.bytes_read
    tensor_data = [c for c in result.coverage if c.format == "tensor-data"]
    assert tensor_data and "10 PyTorch storage records" in (tensor_data[0].reason or "")


def test_repacked_torchscript_still_loads(tmp_path: Path) -> None:
    # Sanity check of the recipe helpers: re-packing a real archive keeps it loadable.
    data = write_zip(members_of(torchscript_archive(torch.nn.Linear(2, 2))))
    path = tmp_path / "repacked.pt"
    path.write_bytes(data)
    module = jit_load(path)
    assert module(torch.ones(1, 2)).shape == (1, 2)
