"""Command line for ``modelshield sandbox PATH``: load a model in the sandbox and report.

``cli.py`` registers the command with :func:`add_parser` and dispatches to :func:`run`.
Exit codes, consistent with ``scan``: 0 clean (loaded, fully observed, nothing at or above the
threshold); 1 malicious behaviour (a finding at or above the threshold); 2 error, including a
missing isolation primitive (bwrap, strace) — the model is then never loaded; 3 inconclusive
(crash, timeout, resource limit, loader error, disturbed observation). Never a clean result
for something that was not fully observed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from modelshield.errors import ModelShieldError
from modelshield.findings import Severity

EXIT_CLEAN = 0
EXIT_UNSAFE = 1
EXIT_ERROR = 2
EXIT_INCOMPLETE = 3

COMMAND = "sandbox"
REPORT_FORMATS = ("text", "json", "sarif", "behaviour")


def add_limit_arguments(p: argparse.ArgumentParser) -> None:
    """The limit options, shared by ``sandbox`` and ``scan --dynamic``."""
    p.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="wall-clock limit (default 30)"
    )
    p.add_argument("--cpu", type=int, default=30, metavar="S", help="CPU-seconds limit")
    p.add_argument(
        "--memory", type=int, default=4096, metavar="MIB", help="address-space budget in MiB"
    )
    p.add_argument(
        "--file-size", type=int, default=64, metavar="MIB", help="largest file written (MiB)"
    )


def add_parser(subparsers: Any) -> None:
    """Register ``sandbox`` on an ``add_subparsers()`` object."""
    from modelshield.sandbox.loaders import LOADERS

    s = subparsers.add_parser(
        COMMAND,
        help="load a model with its real loader in a sandbox and report what it does",
        description="Load each file with the real library (pickle, torch, joblib, numpy, "
        "keras) in a bubblewrap sandbox without network, with a read-only file system, "
        "program starts denied by seccomp and resource limits, while strace records from "
        "outside what the load tries. Needs bwrap and strace; never loads unsandboxed.",
        epilog="Exit codes: 0 clean, 1 malicious behaviour, 2 error (incl. missing bwrap/"
        "strace), 3 inconclusive (crash, timeout, limit; never a clean result).",
    )
    s.add_argument("paths", nargs="+", metavar="PATH", help="model files or directories")
    s.add_argument(
        "-l",
        "--loader",
        choices=("auto", *LOADERS),
        default="auto",
        help="loader to use (default: chosen from the content)",
    )
    s.add_argument(
        "-f",
        "--format",
        choices=REPORT_FORMATS,
        default="text",
        help="report format; 'behaviour' is the JSON behaviour report",
    )
    s.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE")
    s.add_argument(
        "--behaviour-report",
        metavar="FILE",
        help="also write the JSON behaviour report (events, blocked attempts, verdict) to FILE",
    )
    s.add_argument(
        "-t",
        "--threshold",
        choices=[sv.label for sv in Severity if sv > Severity.INFO],
        default="high",
        help="lowest severity that counts as malicious (default: high)",
    )
    add_limit_arguments(s)


def limits_from_args(args: argparse.Namespace) -> Any:
    """:class:`~modelshield.sandbox.Limits` from the parsed limit options."""
    from modelshield.sandbox import Limits

    if args.timeout <= 0 or args.cpu <= 0 or args.memory <= 0 or args.file_size <= 0:
        raise ModelShieldError("sandbox limits must be positive")
    return Limits(
        timeout_s=float(args.timeout),
        cpu_s=int(args.cpu),
        memory_bytes=int(args.memory) * 1024 * 1024,
        file_size_bytes=int(args.file_size) * 1024 * 1024,
    )


def _write(text: str, output: str | None) -> None:
    text = text if text.endswith("\n") else text + "\n"
    if output:
        tmp = Path(output).with_name(Path(output).name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, output)
    else:
        sys.stdout.write(text)


def run(args: argparse.Namespace) -> int:
    """Run ``modelshield sandbox``; returns the exit code (errors print a clear message)."""
    from modelshield.report import render
    from modelshield.sandbox import (
        SandboxError,
        behaviour_json,
        sandbox_paths,
        summary,
        to_scan_result,
    )

    threshold = Severity.parse(args.threshold)
    try:
        limits = limits_from_args(args)
        behaviours, errors = sandbox_paths(args.paths, args.loader, limits)
    except SandboxError as exc:
        print(f"modelshield: error: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_ERROR
    result = to_scan_result(behaviours, errors)
    if args.format == "behaviour":
        report = behaviour_json(behaviours, threshold)
    elif args.format == "text":
        parts = [summary(b, threshold) for b in behaviours]
        parts.append(render(result, "text", threshold=threshold))
        report = "\n\n".join(parts)
    else:
        report = render(result, args.format, threshold=threshold)
    _write(report, args.output)
    if args.behaviour_report:
        _write(behaviour_json(behaviours, threshold), args.behaviour_report)
    for e in errors:
        print(f"modelshield: error: {e.path}: {e.message}", file=sys.stderr)
    if result.at_or_above(threshold):
        return EXIT_UNSAFE
    if errors and not behaviours:
        return EXIT_ERROR
    if not result.complete:
        return EXIT_INCOMPLETE
    return EXIT_CLEAN
