"""The sandbox API (re-exported lazily by :mod:`modelshield.sandbox`)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import replace

from modelshield.findings import Finding, ScanError, ScanResult
from modelshield.sandbox.behaviour import (
    Behaviour,
    analyse,
    behaviour_json,
    summary,
    to_scan_result,
)
from modelshield.sandbox.loaders import LOADERS, detect_loader
from modelshield.sandbox.rules import RULES
from modelshield.sandbox.runner import (
    Limits,
    SandboxError,
    SandboxUnavailable,
    find_tools,
    run_child,
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


def check_available() -> None:
    """Raise :class:`SandboxUnavailable` unless bwrap and strace are installed."""
    find_tools()


def sandbox_file(path: str, loader: str = "auto", limits: Limits | None = None) -> Behaviour:
    """Load ``path`` in the sandbox with ``loader`` (``auto``: chosen from the content)."""
    if loader == "auto":
        chosen = detect_loader(path)
        if chosen is None:
            raise SandboxError(
                f"{path}: cannot tell which loader opens this file; pass --loader "
                f"({', '.join(LOADERS)})"
            )
        loader = chosen
    elif loader not in LOADERS:
        raise SandboxError(f"unknown loader {loader!r} (choose from auto, {', '.join(LOADERS)})")
    return analyse(run_child(path, loader, limits))


def _files(paths: Iterable[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs.sort()
                out.extend(os.path.join(root, n) for n in sorted(names))
        else:
            out.append(p)
    return out


def sandbox_paths(
    paths: Iterable[str], loader: str = "auto", limits: Limits | None = None
) -> tuple[list[Behaviour], list[ScanError]]:
    """Sandbox every file under ``paths``. Files no loader opens are errors only when named
    explicitly with ``loader='auto'``; files in directories without a loader are skipped."""
    check_available()
    behaviours: list[Behaviour] = []
    errors: list[ScanError] = []
    explicit = {p for p in paths if not os.path.isdir(p)}
    for f in _files(paths):
        if loader == "auto" and f not in explicit and detect_loader(f) is None:
            continue
        try:
            behaviours.append(sandbox_file(f, loader, limits))
        except SandboxUnavailable:
            raise
        except SandboxError as exc:
            errors.append(ScanError(f, exc.diagnostics()))
    return behaviours, errors


def scan_dynamic(static: ScanResult, limits: Limits | None = None) -> ScanResult:
    """Add sandbox findings and coverage to a static :class:`ScanResult` (``scan --dynamic``).

    Every top-level input file that a supported loader opens is loaded in the sandbox; the
    static result is kept as it is. Raises :class:`SandboxUnavailable` when the sandbox cannot
    run (the caller must then fail, never fall back to static-only silently).
    """
    check_available()
    seen: list[str] = []
    for cov in static.coverage:
        if cov.member is None and cov.path not in seen and os.path.isfile(cov.path):
            seen.append(cov.path)
    behaviours: list[Behaviour] = []
    errors: list[ScanError] = []
    for path in seen:
        if detect_loader(path) is None:
            continue
        try:
            behaviours.append(sandbox_file(path, "auto", limits))
        except SandboxUnavailable:
            raise
        except SandboxError as exc:
            errors.append(ScanError(path, f"sandbox: {exc.diagnostics()}"))
    dynamic = to_scan_result(behaviours, errors)
    findings: tuple[Finding, ...] = tuple(
        sorted(static.findings + dynamic.findings, key=Finding.sort_key)
    )
    return replace(
        static,
        findings=findings,
        coverage=static.coverage + dynamic.coverage,
        errors=static.errors + dynamic.errors,
        duration_s=static.duration_s + dynamic.duration_s,
    )
