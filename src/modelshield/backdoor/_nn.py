"""Small PyTorch helpers shared by the checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from modelshield.backdoor._deps import require_torch

if TYPE_CHECKING:
    import torch
    from torch import nn


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Call the model and check it returns (N, classes) logits."""
    out = model(x)
    if not hasattr(out, "ndim") or out.ndim != 2 or out.shape[0] != x.shape[0]:
        from modelshield.backdoor._deps import BackdoorError

        shape = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
        raise BackdoorError(f"the model must return (batch, classes) logits, got {shape}")
    result: torch.Tensor = out
    return result


def logits(model: nn.Module, x: NDArray[np.float32], *, batch: int = 512) -> NDArray[np.float32]:
    """Logits for a NumPy batch, computed without gradients in chunks of ``batch``."""
    torch = require_torch()
    outs: list[NDArray[np.float32]] = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(x[i : i + batch]))
            outs.append(forward(model, chunk).float().numpy())
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outs).astype(np.float32)


def softmax(z: NDArray[np.float32]) -> NDArray[np.float32]:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    out: NDArray[np.float32] = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    return out


def mad_anomaly(values: NDArray[np.float64], *, floor: float = 0.0) -> NDArray[np.float64]:
    """Robust z-scores ``(v - median) / (1.4826 * MAD)``; the MAD is at least ``floor``."""
    med = float(np.median(values))
    mad = max(1.4826 * float(np.median(np.abs(values - med))), floor, 1e-12)
    out: NDArray[np.float64] = (values - med) / mad
    return out
