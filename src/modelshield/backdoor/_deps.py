"""Errors of the backdoor checks and the lazy PyTorch requirement."""

from __future__ import annotations

from types import ModuleType

from modelshield.errors import ModelShieldError

INSTALL_HINT = "pip install 'modelshield[backdoor]'"


class BackdoorError(ModelShieldError):
    """A backdoor check could not run: missing PyTorch, bad inputs, a model it cannot load."""


def require_torch() -> ModuleType:
    """Import and return :mod:`torch`, or raise :class:`BackdoorError` saying how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise BackdoorError(
            f"the backdoor checks need PyTorch, which is not installed ({exc}); "
            f"install it with: {INSTALL_HINT}"
        ) from exc
    return torch
