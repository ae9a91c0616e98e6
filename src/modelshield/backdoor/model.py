"""The classifier under test and its data: specification, safe loading, clean-sample sets.

Two ways to give the model, neither of which unpickles anything:

* an architecture import path ``pkg.module:ClassName`` (your own, trusted code: it is imported
  and instantiated) plus weights in safetensors, read with ``safetensors`` after a modelshield
  scan of the file;
* a TorchScript archive, scanned with :func:`modelshield.scan` first and refused when anything is
  flagged or could not be fully analysed; only then is it given to ``torch.jit.load``.
"""

from __future__ import annotations

import importlib
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from modelshield.backdoor._deps import BackdoorError, require_torch
from modelshield.config import Config
from modelshield.findings import Severity

if TYPE_CHECKING:
    from torch import nn

MIN_PER_CLASS = 5
"""Fewer clean samples than this for any class is an error; fewer than 10 is a warning."""


@dataclass(frozen=True)
class ClassifierSpec:
    """What the checks need to know about the classifier's inputs and outputs."""

    input_shape: tuple[int, ...]  # one input without the batch dimension, e.g. (1, 8, 8)
    value_range: tuple[float, float]  # lowest and highest valid input value
    num_classes: int

    def __post_init__(self) -> None:
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise BackdoorError(f"input shape must be (C, H, W), got {self.input_shape}")
        lo, hi = self.value_range
        if not lo < hi:
            raise BackdoorError(f"value range must be (low, high) with low < high, got {lo, hi}")
        if self.num_classes < 3:
            raise BackdoorError("the backdoor checks need at least 3 classes")


@dataclass(frozen=True)
class LabelledSet:
    """Inputs ``x`` (N, C, H, W) float32 and integer labels ``y`` (N,)."""

    x: NDArray[np.float32]
    y: NDArray[np.int64]

    def per_class(self, num_classes: int) -> NDArray[np.int64]:
        return np.bincount(self.y, minlength=num_classes).astype(np.int64)


def load_npz(path: str | Path, spec: ClassifierSpec, *, labels: bool = True) -> LabelledSet:
    """Read ``x`` (and ``y``) from an ``.npz`` without pickles; check shapes, labels and range."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data.files:
                raise BackdoorError(f"{path}: no array named 'x' (found {sorted(data.files)})")
            x = np.asarray(data["x"], dtype=np.float32)
            if labels and "y" not in data.files:
                raise BackdoorError(f"{path}: no array named 'y' (found {sorted(data.files)})")
            y = (
                np.asarray(data["y"]).astype(np.int64)
                if "y" in data.files
                else np.full(len(x), -1, dtype=np.int64)
            )
    except (OSError, ValueError) as exc:
        raise BackdoorError(f"{path}: cannot read as .npz of arrays: {exc}") from exc
    return check_set(LabelledSet(x, y), spec, str(path), labels=labels)


def check_set(
    data: LabelledSet, spec: ClassifierSpec, name: str, *, labels: bool = True
) -> LabelledSet:
    x, y = data.x, data.y
    if x.ndim == len(spec.input_shape) and tuple(x.shape) == spec.input_shape:
        x = x[None]
    if tuple(x.shape[1:]) != spec.input_shape:
        raise BackdoorError(f"{name}: inputs have shape {x.shape[1:]}, expected {spec.input_shape}")
    if len(y) != len(x):
        raise BackdoorError(f"{name}: {len(x)} inputs but {len(y)} labels")
    if not np.isfinite(x).all():
        raise BackdoorError(f"{name}: inputs contain NaN or infinity")
    lo, hi = spec.value_range
    tol = 1e-4 * (hi - lo)
    if len(x) and (x.min() < lo - tol or x.max() > hi + tol):
        raise BackdoorError(
            f"{name}: input values span [{x.min():g}, {x.max():g}], outside the declared "
            f"value range [{lo:g}, {hi:g}]"
        )
    if labels and len(y) and (y.min() < 0 or y.max() >= spec.num_classes):
        raise BackdoorError(f"{name}: labels must lie in 0..{spec.num_classes - 1}")
    return LabelledSet(np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64))


def require_per_class(data: LabelledSet, spec: ClassifierSpec, name: str) -> list[str]:
    """Raise if a class has fewer than :data:`MIN_PER_CLASS` samples; warn below 10."""
    counts = data.per_class(spec.num_classes)
    few = [c for c in range(spec.num_classes) if counts[c] < MIN_PER_CLASS]
    if few:
        raise BackdoorError(
            f"{name}: classes {few} have fewer than {MIN_PER_CLASS} clean samples "
            f"(counts {counts.tolist()}); give at least ~10 per class"
        )
    thin = [c for c in range(spec.num_classes) if counts[c] < 10]
    return [f"{name}: classes {thin} have fewer than 10 clean samples"] if thin else []


def _import_architecture(path: str) -> Any:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise BackdoorError(f"architecture must be 'pkg.module:ClassName', got {path!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise BackdoorError(f"cannot import the architecture {path!r}: {exc}") from exc
    return obj


def _refuse_if_flagged(path: Path, threshold: Severity, config: Config | None) -> None:
    from modelshield.load import UnsafeModelError
    from modelshield.scanner import scan_bytes

    result = scan_bytes(path.read_bytes(), str(path), config=config)
    if result.at_or_above(threshold) or not result.complete:
        raise UnsafeModelError(str(path), result, threshold)


def load_classifier(
    path: str | Path,
    *,
    architecture: str | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    threshold: Severity = Severity.HIGH,
    config: Config | None = None,
) -> nn.Module:
    """Load the classifier to test, in eval mode on the CPU, without unpickling anything.

    With ``architecture`` (``pkg.module:ClassName``), ``path`` holds safetensors weights that are
    loaded into ``ClassName(**arch_kwargs)`` with ``strict=True``. Without it, ``path`` is a
    TorchScript archive. Either file is scanned first; :class:`modelshield.load.UnsafeModelError`
    is raised when the scan flags it or cannot analyse it completely.
    """
    torch = require_torch()
    file = Path(path)
    if not file.is_file():
        raise BackdoorError(f"{file}: no such file")
    _refuse_if_flagged(file, threshold, config)
    model: nn.Module
    if architecture is not None:
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise BackdoorError(
                f"loading safetensors weights needs the 'safetensors' package "
                f"({exc}); install it with: pip install 'modelshield[backdoor]'"
            ) from exc
        cls = _import_architecture(architecture)
        model = cls(**dict(arch_kwargs or {}))
        if not isinstance(model, torch.nn.Module):
            raise BackdoorError(f"{architecture} did not build a torch.nn.Module")
        try:
            state = load_file(str(file), device="cpu")
            model.load_state_dict(state, strict=True)
        except Exception as exc:  # safetensors/torch raise assorted types on bad files
            raise BackdoorError(f"{file}: cannot load weights into {architecture}: {exc}") from exc
    else:
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated upstream, still loaded
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(str(file), map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError and friends on bad archives
            raise BackdoorError(f"{file}: cannot load as TorchScript: {exc}") from exc
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def parse_arch_kwargs(text: str | None) -> dict[str, Any]:
    """Parse ``--arch-kwargs`` JSON (an object) into keyword arguments."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BackdoorError(f"architecture arguments are not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BackdoorError("architecture arguments must be a JSON object")
    return value
