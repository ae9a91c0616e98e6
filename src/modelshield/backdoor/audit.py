"""Training-data audit: activation clustering per class, spectral signatures as ranking.

For each label, the penultimate-layer activations (the input of the model's last ``Linear``
layer; the logits where that cannot be hooked, e.g. TorchScript) of the training samples with that
label are centred and reduced to a few principal components, then split in two with k-means
(Chen et al., "Activation Clustering", 2018). Poisoned samples carry the trigger feature the
model learnt, so in the target class they form a small, well-separated cluster. A class counts
as poisoned when the smaller cluster holds at most ``max_cluster_share`` of the class and, with
the defender's clean reference samples (recommended), when those clean samples of the label almost
never fall into it (at most ``max_reference_ratio`` x its share of the training samples): poison
is foreign to clean data, while a natural sub-style of a digit (an open 4, a curly 9) also appears
among clean samples. Without reference samples the split's silhouette score must reach
``min_silhouette`` instead, which also flags distinctive natural sub-styles. Its smaller cluster
is reported.

Every sample also gets its spectral-signature score (Tran et al., NeurIPS 2018): the squared
projection of its centred activation onto the class's top singular vector. Flagged samples are
listed by that score, most suspicious first; the per-class ranking is available for review.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from modelshield.backdoor._deps import require_torch
from modelshield.backdoor._nn import logits
from modelshield.backdoor.model import ClassifierSpec, LabelledSet

if TYPE_CHECKING:
    import torch as torch_types
    from torch import nn


def penultimate(
    model: nn.Module, x: NDArray[np.float32], *, batch: int = 512
) -> tuple[NDArray[np.float32], str]:
    """Activations entering the last ``Linear`` layer (and that layer's name), else logits."""
    torch = require_torch()
    last: tuple[str, nn.Module] | None = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            last = (name, module)
    if last is not None and not isinstance(model, torch.jit.ScriptModule):
        captured: list[NDArray[np.float32]] = []

        def hook(_module: nn.Module, inputs: tuple[torch_types.Tensor, ...]) -> None:
            captured.append(inputs[0].detach().flatten(1).float().numpy())

        handle = last[1].register_forward_pre_hook(hook)
        try:
            logits(model, x, batch=batch)
        finally:
            handle.remove()
        if captured:
            return np.concatenate(captured).astype(np.float32), f"input of {last[0]}"
    return logits(model, x, batch=batch), "logits"


def _kmeans2(
    z: NDArray[np.float64], rng: np.random.Generator, restarts: int = 4
) -> NDArray[np.int64]:
    """Two-cluster k-means (k-means++ seeding, best of ``restarts``); labels 0/1."""
    best_labels = np.zeros(len(z), dtype=np.int64)
    best_inertia = np.inf
    for _ in range(restarts):
        first = z[rng.integers(len(z))]
        d = ((z - first) ** 2).sum(1)
        total = d.sum()
        second = z[rng.choice(len(z), p=d / total)] if total > 0 else first
        centres = np.stack([first, second])
        labels = np.zeros(len(z), dtype=np.int64)
        for _ in range(50):
            dist = ((z[:, None, :] - centres[None]) ** 2).sum(2)
            new = dist.argmin(1).astype(np.int64)
            if (new == labels).all() and _ > 0:
                break
            labels = new
            for c in (0, 1):
                if (labels == c).any():
                    centres[c] = z[labels == c].mean(0)
        inertia = float(((z - centres[labels]) ** 2).sum())
        if inertia < best_inertia:
            best_inertia, best_labels = inertia, labels
    return best_labels


def _silhouette(z: NDArray[np.float64], labels: NDArray[np.int64]) -> float:
    if len(set(labels.tolist())) < 2:
        return 0.0
    d = np.sqrt(np.maximum(((z[:, None, :] - z[None]) ** 2).sum(2), 0.0))
    scores = np.zeros(len(z))
    for i in range(len(z)):
        same = labels == labels[i]
        n_same = same.sum() - 1
        if n_same == 0:
            continue
        a = d[i, same].sum() / n_same
        b = d[i, ~same].mean()
        scores[i] = (b - a) / max(a, b, 1e-12)
    return float(scores.mean())


@dataclass(frozen=True)
class ClassAudit:
    """Activation-clustering statistics of one label's training samples."""

    label: int
    samples: int
    small_cluster_share: float  # share of the class in the smaller k-means cluster
    silhouette: float
    reference_share: float | None  # share of the label's clean reference samples in that cluster
    poisoned: bool
    flagged: tuple[int, ...]  # training-set indices, most suspicious (spectral score) first


@dataclass(frozen=True)
class AuditResult:
    """Suspicious training samples and the per-class evidence."""

    classes: tuple[ClassAudit, ...]
    spectral_score: NDArray[np.float64] = field(repr=False)  # per training sample
    feature_source: str
    max_cluster_share: float
    min_silhouette: float
    max_reference_ratio: float

    @property
    def flagged(self) -> tuple[int, ...]:
        return tuple(i for c in self.classes for i in c.flagged)

    @property
    def poisoned_classes(self) -> tuple[int, ...]:
        return tuple(c.label for c in self.classes if c.poisoned)


def audit_training_data(
    model: nn.Module,
    train: LabelledSet,
    spec: ClassifierSpec,
    *,
    reference: LabelledSet | None = None,
    components: int = 10,
    max_cluster_share: float = 0.35,
    min_silhouette: float = 0.35,
    max_reference_ratio: float = 0.25,
    min_reference: int = 5,
    seed: int = 0,
) -> AuditResult:
    """Cluster each label's activations; flag the small, foreign cluster of poisoned labels.

    ``reference``: clean samples the defender trusts (the same set as for trigger search); a label
    needs at least ``min_reference`` of them for the reference test, else silhouette is used.
    """
    feats, source = penultimate(model, train.x)
    ref_feats = penultimate(model, reference.x)[0] if reference is not None else None
    rng = np.random.default_rng(seed)
    spectral = np.zeros(len(train.x))
    classes: list[ClassAudit] = []
    for label in range(spec.num_classes):
        idx = np.flatnonzero(train.y == label)
        if len(idx) < 10:
            classes.append(ClassAudit(label, len(idx), 0.0, 0.0, None, False, ()))
            continue
        acts = feats[idx].astype(np.float64)
        mean = acts.mean(0)
        centred = acts - mean
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        spectral[idx] = (centred @ vt[0]) ** 2
        z = centred @ vt[: min(components, vt.shape[0])].T
        labels = _kmeans2(z, rng)
        sizes = np.bincount(labels, minlength=2)
        small = int(np.argmin(sizes))
        share = float(sizes[small] / len(idx))
        sil = _silhouette(z, labels)
        ref_share: float | None = None
        if ref_feats is not None and reference is not None:
            ref = ref_feats[reference.y == label].astype(np.float64)
            if len(ref) >= min_reference:
                rz = (ref - mean) @ vt[: z.shape[1]].T
                centres = np.stack([z[labels == c].mean(0) for c in (0, 1)])
                near = ((rz[:, None, :] - centres[None]) ** 2).sum(2).argmin(1)
                ref_share = float((near == small).mean())
        if ref_share is not None:
            separated = ref_share <= max_reference_ratio * share
        else:
            separated = sil >= min_silhouette
        poisoned = share <= max_cluster_share and separated
        flagged: tuple[int, ...] = ()
        if poisoned:
            members = idx[labels == small]
            flagged = tuple(int(i) for i in members[np.argsort(-spectral[members])])
        classes.append(ClassAudit(label, len(idx), share, sil, ref_share, poisoned, flagged))
    return AuditResult(
        tuple(classes), spectral, source, max_cluster_share, min_silhouette, max_reference_ratio
    )
