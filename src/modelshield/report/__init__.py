"""Reporters: each one a pure function of a :class:`~modelshield.findings.ScanResult`.

``text`` is for people at a terminal, ``json`` is the versioned machine-readable report
(schema in ``schemas/scan-result-v1.json``), ``sarif`` is SARIF 2.1.0 for GitHub code scanning.
All of them share one verdict: see :class:`modelshield.report._common.Verdict`.
"""

from __future__ import annotations

from modelshield.findings import ScanResult, Severity
from modelshield.report._common import Verdict, verdict

FORMATS = ("text", "json", "sarif")

__all__ = ["FORMATS", "Verdict", "render", "verdict"]


def render(result: ScanResult, fmt: str, *, threshold: Severity, color: bool = False) -> str:
    """Render ``result`` in format ``fmt`` (one of :data:`FORMATS`).

    ``color`` only affects the text format. Raises :class:`ValueError` for an unknown format.
    """
    # Each reporter is imported when used: start-up stays light for the common text report.
    if fmt == "text":
        from modelshield.report.text import render_text

        return render_text(result, threshold=threshold, color=color)
    if fmt == "json":
        from modelshield.report.json import render_json

        return render_json(result, threshold=threshold)
    if fmt == "sarif":
        from modelshield.report.sarif import render_sarif

        return render_sarif(result, threshold=threshold)
    raise ValueError(f"unknown report format {fmt!r} (choose from {', '.join(FORMATS)})")
