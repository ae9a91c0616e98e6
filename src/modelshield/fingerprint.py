"""A format-independent identity of a model's weights.

The fingerprint is the same for a ``.pt`` checkpoint and its ``.safetensors`` conversion, and for
the same weights saved in another tensor order; it changes when any weight, name, dtype or shape
changes. Scheme ``modelshield-weights-v1``, reimplementable anywhere:

1. For every tensor, take its name (UTF-8), its dtype as a safetensors dtype name (``F32``,
   ``BF16``, ``I64``, ...), its shape, and its bytes in C-contiguous order and little-endian.
2. Per tensor, a line ``name \\t dtype \\t shape \\t sha256(bytes)`` where shape is the dimensions
   joined by ``,`` (empty for scalars), and the digest is lowercase hex.
3. Sort the lines by name (byte order of the UTF-8 name), join them with ``\\n`` and append a
   final ``\\n``; the fingerprint is ``sha256:`` + the lowercase hex SHA-256 of those bytes.

Tied weights are listed under every name they have (the same bytes under two names).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from modelshield.tensors import read_tensors

SCHEME = "modelshield-weights-v1"


@dataclass(frozen=True)
class TensorDigest:
    name: str
    dtype: str
    shape: tuple[int, ...]
    sha256: str

    def line(self) -> str:
        return f"{self.name}\t{self.dtype}\t{','.join(map(str, self.shape))}\t{self.sha256}"


@dataclass(frozen=True)
class Fingerprint:
    value: str
    """``sha256:<hex>``"""
    tensors: tuple[TensorDigest, ...]
    scheme: str = SCHEME


def fingerprint(path: str) -> Fingerprint:
    """Fingerprint the weights in ``path`` (PyTorch, safetensors, NumPy); nothing is executed."""
    with read_tensors(path) as ts:
        digests = [
            TensorDigest(t.name, t.dtype, t.shape, hashlib.sha256(t.read()).hexdigest())
            for t in ts.tensors
        ]
    digests.sort(key=lambda d: d.name.encode("utf-8"))
    names = [d.name for d in digests]
    if len(set(names)) != len(names):
        raise ValueError("duplicate tensor names")
    body = "".join(d.line() + "\n" for d in digests).encode("utf-8")
    return Fingerprint("sha256:" + hashlib.sha256(body).hexdigest(), tuple(digests))
