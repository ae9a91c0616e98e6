"""Dynamic analysis: load a model with the real library in a sandbox and report what it does.

Public API::

    from modelshield.sandbox import sandbox_file, to_scan_result

    behaviour = sandbox_file("model.pt")            # loader chosen from the content
    behaviour.verdict()                             # "malicious" | "inconclusive" | "clean"
    result = to_scan_result([behaviour])            # for the text / json / sarif reporters

``scan_dynamic(static_result)`` adds the sandbox's findings and coverage to a static scan
(``modelshield scan --dynamic``). See :mod:`modelshield.sandbox.runner` for the isolation and
:mod:`modelshield.sandbox.behaviour` for what is recorded. Nothing here ever loads a model
outside the sandbox: a missing primitive raises :class:`SandboxUnavailable`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelshield.sandbox.api import (
        LOADERS,
        RULES,
        Behaviour,
        Limits,
        SandboxError,
        SandboxUnavailable,
        behaviour_json,
        check_available,
        detect_loader,
        sandbox_file,
        sandbox_paths,
        scan_dynamic,
        summary,
        to_scan_result,
    )

__all__ = [
    "LOADERS",
    "RULES",
    "Behaviour",
    "Limits",
    "SandboxError",
    "SandboxUnavailable",
    "behaviour_json",
    "check_available",
    "detect_loader",
    "sandbox_file",
    "sandbox_paths",
    "scan_dynamic",
    "summary",
    "to_scan_result",
]


def __getattr__(name: str) -> Any:
    # The sandbox machinery is imported on first use: the CLI only needs it when a sandbox runs.
    if name in __all__:
        return getattr(importlib.import_module("modelshield.sandbox.api"), name)
    raise AttributeError(f"module 'modelshield.sandbox' has no attribute {name!r}")
