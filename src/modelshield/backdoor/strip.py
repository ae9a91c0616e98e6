"""STRIP runtime input check (Gao et al., ACSAC 2019).

An input carrying a strong trigger keeps its (target) prediction when other clean inputs are
superimposed on it, so the entropy of the model's averaged prediction over the superimposed copies
stays low; a clean input's prediction is destroyed by the overlay and its entropy is high. The
threshold is the entropy quantile of clean inputs at the chosen false-rejection rate (FRR).

Superimposition adds the two inputs and clips to the value range, as the original STRIP does
with ``addWeighted(x, 1, overlay, 1)`` on images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from modelshield.backdoor._deps import BackdoorError
from modelshield.backdoor._nn import logits, softmax
from modelshield.backdoor.model import ClassifierSpec, LabelledSet

if TYPE_CHECKING:
    from torch import nn


def strip_entropy(
    model: nn.Module,
    x: NDArray[np.float32],
    pool: NDArray[np.float32],
    spec: ClassifierSpec,
    *,
    overlays: int = 32,
    seed: int = 0,
    exclude_self: bool = False,
) -> NDArray[np.float64]:
    """Mean prediction entropy (nats) of each input under ``overlays`` superimposed pool inputs.

    With ``exclude_self``, ``x`` must be ``pool`` itself and an input is never overlaid on itself.
    """
    if len(pool) < 2:
        raise BackdoorError("STRIP needs at least 2 clean inputs to superimpose")
    rng = np.random.default_rng(seed)
    lo, hi = spec.value_range
    out = np.zeros(len(x))
    for i in range(len(x)):
        pick = rng.choice(len(pool) - int(exclude_self), size=overlays, replace=True)
        if exclude_self:
            pick = pick + (pick >= i)
        mixed = np.clip(x[i][None] + pool[pick], lo, hi).astype(np.float32)
        p = softmax(logits(model, mixed)).astype(np.float64)
        out[i] = float(np.mean(-(p * np.log(np.clip(p, 1e-12, None))).sum(1)))
    return out


@dataclass(frozen=True)
class StripResult:
    """Entropies of checked inputs and which ones fall below the calibrated threshold."""

    entropy: NDArray[np.float64] = field(repr=False)
    flagged: NDArray[np.bool_] = field(repr=False)
    threshold: float

    @property
    def flagged_indices(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.flagged)]


@dataclass(frozen=True)
class StripDetector:
    """A calibrated STRIP check: flag inputs whose entropy is below ``threshold``."""

    model: nn.Module = field(repr=False)
    pool: NDArray[np.float32] = field(repr=False)
    spec: ClassifierSpec
    threshold: float
    frr: float
    overlays: int
    clean_entropy: NDArray[np.float64] = field(repr=False)
    seed: int = 0

    def check(self, x: NDArray[np.float32]) -> StripResult:
        """Entropy of each input and whether it is flagged (entropy below the threshold)."""
        ent = strip_entropy(
            self.model, x, self.pool, self.spec, overlays=self.overlays, seed=self.seed + 1
        )
        return StripResult(ent, ent < self.threshold, self.threshold)


def calibrate_strip(
    model: nn.Module,
    clean: LabelledSet,
    spec: ClassifierSpec,
    *,
    frr: float = 0.05,
    overlays: int = 32,
    seed: int = 0,
) -> StripDetector:
    """Threshold = the ``frr`` quantile of the clean inputs' STRIP entropy (overlaid by others)."""
    if not 0 < frr < 0.5:
        raise BackdoorError(f"false-rejection rate must be in (0, 0.5), got {frr}")
    if len(clean.x) < 20:
        raise BackdoorError("STRIP calibration needs at least 20 clean inputs")
    ent = strip_entropy(
        model, clean.x, clean.x, spec, overlays=overlays, seed=seed, exclude_self=True
    )
    threshold = float(np.quantile(ent, frr))
    return StripDetector(model, clean.x, spec, threshold, frr, overlays, ent, seed)
