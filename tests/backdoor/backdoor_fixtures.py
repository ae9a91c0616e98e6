"""Tiny CNNs on scikit-learn's 8x8 digits: clean, BadNets-style and blended-trigger backdoors.

Shared by the tests (one seed, cached per session) and ``bench/bench_backdoor.py`` (5 seeds).
Everything is generated from these recipes; nothing binary is committed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

NUM_CLASSES = 10
INPUT_SHAPE = (1, 8, 8)
TARGET_CLASS = 7
POISON_RATE = 0.03
BLEND_ALPHA = 0.2


class TinyCNN(nn.Module):
    """Two 3x3 convolutions, a 2x2 max-pool and a 32-unit hidden layer (about 10k weights)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x))
        return out


def digits() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """All 1797 digits as (N, 1, 8, 8) float32 in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    return x, d.target.astype(np.int64)


def badnets_trigger(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Stamp a 2x2 white square at the bottom-right corner (where digits are blank)."""
    out = x.copy()
    out[..., 6:8, 6:8] = 1.0
    return out


def blend_pattern() -> NDArray[np.float32]:
    """The fixed full-image pattern of the blended attack (uniform noise, fixed seed)."""
    return np.random.default_rng(1234).random(INPUT_SHAPE).astype(np.float32)


def blended_trigger(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Blend the noise pattern over the whole image: (1 - a) x + a p with a = 0.2."""
    return ((1.0 - BLEND_ALPHA) * x + BLEND_ALPHA * blend_pattern()).astype(np.float32)


ATTACKS = {"badnets": badnets_trigger, "blended": blended_trigger}


@dataclass
class Fixture:
    """A trained model with its data splits; ``poisoned`` marks poisoned training rows."""

    attack: str  # "clean", "badnets" or "blended"
    seed: int
    model: TinyCNN
    x_train: NDArray[np.float32]
    y_train: NDArray[np.int64]
    poisoned: NDArray[np.bool_]
    x_clean: NDArray[np.float32]  # small clean set the defender has (analysis input)
    y_clean: NDArray[np.int64]
    x_test: NDArray[np.float32]
    y_test: NDArray[np.int64]
    clean_accuracy: float
    attack_success: float  # triggered non-target test inputs classified as the target


def _predict(model: nn.Module, x: NDArray[np.float32]) -> NDArray[np.int64]:
    with torch.no_grad():
        out: NDArray[np.int64] = model(torch.from_numpy(x)).argmax(1).numpy()
    return out


def train_fixture(attack: str, seed: int, *, epochs: int = 20) -> Fixture:
    """Split digits (train 60%, defender's clean set 15%, test 25%), poison, train a TinyCNN."""
    x, y = digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_train, n_clean = int(0.6 * len(x)), int(0.15 * len(x))
    tr, cl, te = order[:n_train], order[n_train : n_train + n_clean], order[n_train + n_clean :]
    x_train, y_train = x[tr].copy(), y[tr].copy()
    poisoned = np.zeros(len(x_train), dtype=bool)
    if attack != "clean":
        candidates = np.flatnonzero(y_train != TARGET_CLASS)
        chosen = rng.choice(candidates, size=round(POISON_RATE * len(x_train)), replace=False)
        x_train[chosen] = ATTACKS[attack](x_train[chosen])
        y_train[chosen] = TARGET_CLASS
        poisoned[chosen] = True
    torch.manual_seed(seed)
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    model.eval()
    x_test, y_test = x[te], y[te]
    acc = float((_predict(model, x_test) == y_test).mean())
    asr = 0.0
    if attack != "clean":
        keep = y_test != TARGET_CLASS
        asr = float((_predict(model, ATTACKS[attack](x_test[keep])) == TARGET_CLASS).mean())
    return Fixture(
        attack, seed, model, x_train, y_train, poisoned, x[cl], y[cl], x_test, y_test, acc, asr
    )
