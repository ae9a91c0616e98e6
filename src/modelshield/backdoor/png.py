"""A minimal PNG writer (zlib + struct, no imaging library): greyscale or RGB, 8 bits."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from numpy.typing import NDArray


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encode_png(image: NDArray[np.floating] | NDArray[np.integer], *, scale: int = 1) -> bytes:
    """Encode an image as PNG bytes.

    ``image`` is (H, W) greyscale or (C, H, W) with C = 1 or 3, floats in [0, 1] (clipped) or
    integers in [0, 255]. ``scale`` enlarges each pixel to ``scale`` x ``scale`` (nearest
    neighbour) so that tiny inputs such as 8x8 digits are visible.
    """
    arr = np.asarray(image)
    if arr.ndim == 3:
        if arr.shape[0] not in (1, 3):
            raise ValueError(f"expected 1 or 3 channels first, got shape {arr.shape}")
        arr = arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))
    elif arr.ndim != 2:
        raise ValueError(f"expected (H, W) or (C, H, W), got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        pixels = np.rint(np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        pixels = np.clip(arr, 0, 255).astype(np.uint8)
    if scale < 1:
        raise ValueError("scale must be at least 1")
    if scale > 1:
        pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    height, width = pixels.shape[:2]
    colour_type = 2 if pixels.ndim == 3 else 0
    rows = pixels.reshape(height, -1)
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(height))  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def write_png(
    path: str | Path, image: NDArray[np.floating] | NDArray[np.integer], *, scale: int = 1
) -> Path:
    """Write :func:`encode_png` output to ``path`` and return the path."""
    out = Path(path)
    out.write_bytes(encode_png(image, scale=scale))
    return out
