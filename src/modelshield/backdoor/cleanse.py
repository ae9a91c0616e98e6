"""Trigger reverse-engineering (Neural Cleanse family) with a data-free maximum-margin pre-screen.

For every class ``t`` the smallest mask ``m`` (H x W, values in [0, 1]) and pattern ``p`` (inside
the value range) are optimised so that ``(1 - m) * x + m * p`` is classified as ``t`` for clean
inputs ``x`` of the other classes (Wang et al., S&P 2019). A backdoor target class needs a much
smaller mask than the others. All classes are optimised together in one batched problem, with
Neural Cleanse's adaptive weight on the mask's L1 norm (raised while the attack succeeds, lowered
while it fails); the smallest mask that reached the success rate is kept.

The pre-screen (Wang et al., "MM-BD", S&P 2024) needs no data: for every class it maximises, over
inputs in the value range, the margin between that class's logit and the largest other logit.
Backdoor targets tend to reach abnormally large margins. It is reported beside the main result.

Decision rule (see :class:`DecisionRule`): the anomaly index (median absolute deviation) alone
flags clean small CNNs, whose per-class mask sizes are few and noisy, so a class is flagged only
when its mask is anomalously small *and* small in absolute terms *and* much smaller than the
median class's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from modelshield.backdoor._deps import require_torch
from modelshield.backdoor._nn import forward, logits, mad_anomaly
from modelshield.backdoor.model import ClassifierSpec, LabelledSet

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class DecisionRule:
    """When a class counts as a backdoor target. All three conditions must hold.

    * ``anomaly_index`` of its mask size (how many robust standard deviations below the median
      of all classes, the MAD taken at least ``mad_floor`` x median) is above
      ``min_anomaly_index``;
    * its mask covers at most ``max_mask_fraction`` of the input area (absolute size);
    * its mask is at most ``max_median_ratio`` x the median class's mask.
    """

    min_anomaly_index: float = 2.0
    max_mask_fraction: float = 0.08
    max_median_ratio: float = 0.5
    mad_floor: float = 0.1


@dataclass(frozen=True)
class ClassTrigger:
    """The smallest trigger found for one class."""

    label: int
    mask_fraction: float  # L1 norm of the mask / input area (0: nothing, 1: whole input)
    attack_success: float  # share of clean inputs of other classes sent to ``label``
    reached: bool  # the optimisation reached the target success rate
    anomaly_index: float  # > 0: smaller than the median class's mask
    mask: NDArray[np.float32] = field(repr=False)  # (H, W) in [0, 1]
    pattern: NDArray[np.float32] = field(repr=False)  # (C, H, W) inside the value range

    @property
    def trigger_image(self) -> NDArray[np.float32]:
        """``mask * pattern`` scaled to [0, 1] for display, shape (C, H, W)."""
        return (self.mask[None] * self.pattern).astype(np.float32)


@dataclass(frozen=True)
class Prescreen:
    """Data-free maximum-margin statistic per class, and its anomaly index (high side)."""

    max_margin: tuple[float, ...]
    anomaly_index: tuple[float, ...]
    suspected: int | None  # the class with the largest anomaly index, if above the threshold
    seconds: float


@dataclass(frozen=True)
class CleanseResult:
    """The verdict of trigger reverse-engineering for one model."""

    triggers: tuple[ClassTrigger, ...]
    flagged: bool
    target: int | None
    reason: str
    rule: DecisionRule
    prescreen: Prescreen | None
    seconds: float
    warnings: tuple[str, ...] = ()

    @property
    def mask_fractions(self) -> tuple[float, ...]:
        return tuple(t.mask_fraction for t in self.triggers)

    @property
    def anomaly_indices(self) -> tuple[float, ...]:
        return tuple(t.anomaly_index for t in self.triggers)


def prescreen(
    model: nn.Module,
    spec: ClassifierSpec,
    *,
    restarts: int = 4,
    steps: int = 150,
    lr: float = 0.1,
    seed: int = 0,
    threshold: float = 3.5,
) -> Prescreen:
    """MM-BD: the largest logit margin each class reaches over inputs in the value range."""
    torch = require_torch()
    started = time.perf_counter()
    k = spec.num_classes
    lo, hi = spec.value_range
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn((k * restarts, *spec.input_shape), generator=gen).requires_grad_(True)
    target = torch.arange(k).repeat_interleave(restarts)
    onehot = torch.nn.functional.one_hot(target, k).bool()
    opt = torch.optim.Adam([z], lr=lr)
    margin = torch.zeros(k * restarts)
    for _ in range(steps):
        x = lo + (hi - lo) * torch.sigmoid(z)
        out = forward(model, x)
        own = out.gather(1, target[:, None])[:, 0]
        other = out.masked_fill(onehot, float("-inf")).max(1).values
        margin = own - other
        opt.zero_grad()
        (-margin.sum()).backward()  # type: ignore[no-untyped-call]
        opt.step()
    stats = margin.detach().reshape(k, restarts).max(1).values.double().numpy()
    anomaly = mad_anomaly(stats, floor=0.05 * float(np.median(np.abs(stats))))
    best = int(np.argmax(anomaly))
    return Prescreen(
        max_margin=tuple(float(v) for v in stats),
        anomaly_index=tuple(float(v) for v in anomaly),
        suspected=best if anomaly[best] > threshold else None,
        seconds=time.perf_counter() - started,
    )


def decide(
    fractions: NDArray[np.float64], reached: NDArray[np.bool_], rule: DecisionRule
) -> tuple[NDArray[np.float64], int | None, str]:
    """Apply ``rule`` to per-class mask fractions: anomaly indices, target (or None), reason."""
    sizes = np.where(reached, fractions, 1.0)
    med = float(np.median(sizes))
    anomaly = -mad_anomaly(sizes, floor=rule.mad_floor * med)
    order = np.argsort(-anomaly)
    best = int(order[0])
    size, idx = float(sizes[best]), float(anomaly[best])
    ratio = size / med if med > 0 else 1.0
    summary = (
        f"class {best}: mask {size:.3f} of the input, anomaly index {idx:.2f}, "
        f"{ratio:.2f} x the median mask {med:.3f}"
    )
    checks = [
        (idx > rule.min_anomaly_index, f"anomaly index > {rule.min_anomaly_index:g}"),
        (size <= rule.max_mask_fraction, f"mask <= {rule.max_mask_fraction:g} of the input"),
        (ratio <= rule.max_median_ratio, f"mask <= {rule.max_median_ratio:g} x the median"),
    ]
    failed = [why for ok, why in checks if not ok]
    if not reached[best]:
        failed.insert(0, "trigger reached the target success rate")
    if failed:
        return anomaly, None, f"not flagged; most anomalous {summary}; fails: {', '.join(failed)}"
    return anomaly, best, f"backdoor suspected: {summary}"


def reverse_engineer(
    model: nn.Module,
    clean: LabelledSet,
    spec: ClassifierSpec,
    *,
    steps: int = 400,
    batch_size: int = 32,
    lr: float = 0.1,
    target_success: float = 0.95,
    init_cost: float = 0.05,
    patience: int = 5,
    seed: int = 0,
    rule: DecisionRule | None = None,
    run_prescreen: bool = True,
) -> CleanseResult:
    """Reverse-engineer the smallest trigger per class and decide whether one is a backdoor."""
    torch = require_torch()
    rule = rule or DecisionRule()
    started = time.perf_counter()
    pre = prescreen(model, spec, seed=seed) if run_prescreen else None
    k = spec.num_classes
    c, h, w = spec.input_shape
    lo, hi = spec.value_range
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    xs, ys = torch.from_numpy(clean.x), torch.from_numpy(clean.y)
    mask_logit = torch.zeros((k, 1, h, w)).requires_grad_(True)
    pattern_logit = (0.1 * torch.randn((k, c, h, w), generator=gen)).requires_grad_(True)
    opt = torch.optim.Adam([mask_logit, pattern_logit], lr=lr, betas=(0.5, 0.9))
    classes = torch.arange(k)
    targets = classes.repeat_interleave(batch_size)
    cost = np.zeros(k)
    up, down = np.zeros(k, dtype=int), np.zeros(k, dtype=int)
    best = np.full(k, np.inf)
    best_mask = np.zeros((k, h, w), dtype=np.float32)
    best_pattern = np.zeros((k, c, h, w), dtype=np.float32)
    for _ in range(steps):
        idx = torch.from_numpy(rng.choice(len(xs), size=batch_size, replace=len(xs) < batch_size))
        xb, yb = xs[idx], ys[idx]
        mask = torch.sigmoid(mask_logit)  # (k, 1, h, w)
        pattern = lo + (hi - lo) * torch.sigmoid(pattern_logit)  # (k, c, h, w)
        stamped = (1 - mask)[:, None] * xb[None] + (mask * pattern)[:, None]
        out = forward(model, stamped.reshape(k * batch_size, c, h, w))
        ce = torch.nn.functional.cross_entropy(out, targets, reduction="none").reshape(k, -1)
        other = (yb[None, :] != classes[:, None]).float()
        n_other = other.sum(1).clamp(min=1)
        ce_k = (ce * other).sum(1) / n_other
        l1 = mask.flatten(1).mean(1)
        loss = (ce_k + torch.from_numpy(cost).float() * l1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            hit = (out.argmax(1).reshape(k, -1) == classes[:, None]).float()
            success = ((hit * other).sum(1) / n_other).numpy()
            sizes = l1.detach().double().numpy()
            ok = success >= target_success
            improved = ok & (sizes < best)
            if improved.any():
                best[improved] = sizes[improved]
                best_mask[improved] = mask[improved, 0].numpy()
                best_pattern[improved] = pattern[improved].numpy()
        start = (cost == 0) & ok
        cost[start] = init_cost
        up = np.where(ok, up + 1, 0)
        down = np.where(ok, 0, down + 1)
        raise_ = (cost > 0) & (up >= patience)
        lower = (cost > 0) & (down >= patience)
        cost[raise_] *= 1.5
        cost[lower] /= 1.5**1.5
        up[raise_] = 0
        down[lower] = 0
    # never reached: keep the last mask, reported as not reached
    reached = np.isfinite(best)
    with torch.no_grad():
        last_mask = torch.sigmoid(mask_logit)[:, 0].numpy()
        last_pattern = (lo + (hi - lo) * torch.sigmoid(pattern_logit)).numpy()
    best_mask[~reached] = last_mask[~reached]
    best_pattern[~reached] = last_pattern[~reached]
    fractions = np.where(reached, best, best_mask.reshape(k, -1).mean(1))
    anomaly, target, reason = decide(fractions, reached, rule)
    triggers = []
    for t in range(k):
        others = clean.y != t
        stamped_np = (1 - best_mask[t]) * clean.x[others] + best_mask[t] * best_pattern[t]
        pred = logits(model, stamped_np.astype(np.float32)).argmax(1)
        triggers.append(
            ClassTrigger(
                label=t,
                mask_fraction=float(fractions[t]),
                attack_success=float((pred == t).mean()) if len(pred) else 0.0,
                reached=bool(reached[t]),
                anomaly_index=float(anomaly[t]),
                mask=best_mask[t].copy(),
                pattern=best_pattern[t].copy(),
            )
        )
    return CleanseResult(
        triggers=tuple(triggers),
        flagged=target is not None,
        target=target,
        reason=reason,
        rule=rule,
        prescreen=pre,
        seconds=time.perf_counter() - started,
    )
