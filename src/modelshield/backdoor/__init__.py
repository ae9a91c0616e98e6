"""Behaviour checks for PyTorch classifiers: backdoor triggers and poisoned training data.

Importing this package needs PyTorch (``pip install 'modelshield[backdoor]'``); without it a
:class:`BackdoorError` explains what to install.
"""

from __future__ import annotations

from modelshield.backdoor._deps import BackdoorError, require_torch

require_torch()

from modelshield.backdoor.cleanse import (  # noqa: E402
    ClassTrigger,
    CleanseResult,
    DecisionRule,
    Prescreen,
    prescreen,
    reverse_engineer,
)
from modelshield.backdoor.model import (  # noqa: E402
    ClassifierSpec,
    LabelledSet,
    load_classifier,
    load_npz,
)
from modelshield.backdoor.png import encode_png, write_png  # noqa: E402

__all__ = [
    "BackdoorError",
    "ClassTrigger",
    "ClassifierSpec",
    "CleanseResult",
    "DecisionRule",
    "LabelledSet",
    "Prescreen",
    "encode_png",
    "load_classifier",
    "load_npz",
    "prescreen",
    "reverse_engineer",
    "write_png",
]
