"""Which real loader opens a file: chosen by content (extension only as a hint)."""

from __future__ import annotations

import os
import zipfile

LOADERS = ("pickle", "torch", "joblib", "numpy", "keras")
"""Loaders the sandbox can run (``auto`` picks one of these)."""

_TORCH_EXT = (".pt", ".pth", ".bin", ".ckpt", ".pkl.pt", ".mar")
_JOBLIB_EXT = (".joblib", ".jbl", ".z", ".gz", ".bz2", ".xz", ".lzma", ".lz4")
_COMPRESSED = (b"\x78", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"ZF", b"\x04\x22\x4d\x18", b"\x5d\x00")


def detect_loader(path: str) -> str | None:
    """The loader a victim would most likely use for ``path``; None when none applies."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    name = os.path.basename(path).lower()
    if head.startswith(b"\x93NUMPY"):
        return "numpy"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "keras"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip_loader(path, name)
    if head[:1] == b"\x80" or head[:1] in (b"(", b"c", b"}", b"]", b"\x8c"):
        if name.endswith((".joblib", ".jbl")) or b"joblib.numpy_pickle" in head:
            return "joblib"
        if b"NumpyArrayWrapper" in head:
            return "joblib"
        if head.startswith(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"):
            return "torch"  # legacy torch.save magic number
        if name.endswith(_TORCH_EXT):
            return "torch"
        return "pickle"
    if name.endswith(_JOBLIB_EXT) and head.startswith(_COMPRESSED):
        return "joblib"
    return None


def _zip_loader(path: str, name: str) -> str | None:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()[:10000]
    except (zipfile.BadZipFile, OSError, ValueError):
        return "torch" if name.endswith(_TORCH_EXT) else None
    if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return "torch"
    if "config.json" in names and (
        "model.weights.h5" in names or "metadata.json" in names or name.endswith(".keras")
    ):
        return "keras"
    if names and all(n.endswith(".npy") for n in names):
        return "numpy"
    if name.endswith(".keras"):
        return "keras"
    if name.endswith(_TORCH_EXT):
        return "torch"
    return None
