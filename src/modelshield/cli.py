"""Command line: ``modelshield scan``, ``modelshield rules``, ``modelshield demo``.

Exit codes (stable, documented in the README):

* 0 — clean: every input fully analysed, no finding at or above the threshold;
* 1 — unsafe: at least one finding at or above the threshold;
* 2 — usage, configuration or internal error;
* 3 — incomplete: no finding at or above the threshold, but some input could not be fully
  analysed (unsupported or unreadable content, a limit reached). Never a clean result.

``sandbox`` uses the same codes (1: malicious behaviour, 3: inconclusive run); ``verify`` exits 1
when verification fails; ``backdoor`` exits 1 when a backdoor is suspected or inputs are flagged.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from modelshield import __version__
from modelshield.config import Config, discover_config, load_config_file
from modelshield.errors import ModelShieldError, UnsafeInputError
from modelshield.findings import Finding, ScanResult, Severity
from modelshield.report import FORMATS, render
from modelshield.rules.catalog import RULES
from modelshield.scanner import scan

EXIT_CLEAN = 0
EXIT_UNSAFE = 1
EXIT_ERROR = 2
EXIT_INCOMPLETE = 3

DEFAULT_THRESHOLD = Severity.HIGH


def exit_code(result: ScanResult, threshold: Severity) -> int:
    if result.at_or_above(threshold):
        return EXIT_UNSAFE
    if not result.complete:
        return EXIT_INCOMPLETE
    return EXIT_CLEAN


class _Progress:
    """A one-line progress display on a terminal's stderr for long scans."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.shown = False

    def __call__(self, done: int, total: int, path: str) -> None:
        if total < 2:
            return
        tail = path if len(path) <= 50 else "..." + path[-47:]
        self.stream.write(f"\r\x1b[2K[{done}/{total}] {tail}")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


_COMMANDS = (
    "scan",
    "convert",
    "fingerprint",
    "sign",
    "verify",
    "bom",
    "sandbox",
    "backdoor",
    "rules",
    "demo",
)
"""Every subcommand (tests check this against the full parser)."""


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command-line parser; with ``command``, only that subcommand's arguments (building
    them all costs ~10 ms at every start)."""

    def wanted(*names: str) -> bool:
        return command is None or command in names

    p = argparse.ArgumentParser(
        prog="modelshield",
        description="Find code execution in machine-learning model files without running them.",
        epilog="Exit codes: 0 clean, 1 findings at/above threshold, 2 error, "
        "3 incomplete analysis (never a clean result).",
    )
    p.add_argument("--version", action="version", version=f"modelshield {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    if wanted("scan"):
        _add_scan(sub)
    if wanted("convert"):
        _add_convert(sub)
    if wanted("fingerprint"):
        fp = sub.add_parser(
            "fingerprint",
            help="print a format-independent fingerprint of a model's weights",
            description="Same value for a checkpoint and its safetensors conversion; see the "
            "README for the scheme.",
        )
        fp.add_argument("paths", nargs="+", metavar="PATH")
        fp.add_argument("--json", action="store_true", help="per-tensor digests as JSON")
    if wanted("sign", "verify", "bom"):
        from modelshield import cli_integrity

        cli_integrity.add_parsers(sub)
    if wanted("sandbox"):
        from modelshield import cli_sandbox

        cli_sandbox.add_parser(sub)
    if wanted("backdoor"):
        from modelshield import cli_backdoor

        cli_backdoor.add_parser(sub)
    if wanted("rules"):
        sub.add_parser("rules", help="list the rules and what they detect")
    if wanted("demo"):
        d = sub.add_parser(
            "demo", help="scan two built-in example files (one benign, one malicious)"
        )
        d.add_argument("-f", "--format", choices=FORMATS, default="text")
    return p


def _add_scan(sub: Any) -> None:
    s = sub.add_parser("scan", help="scan files and directories", description="Scan model files.")
    s.add_argument("paths", nargs="+", metavar="PATH", help="files or directories to scan")
    s.add_argument("-f", "--format", choices=FORMATS, default="text", help="report format")
    s.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE")
    s.add_argument(
        "-t",
        "--threshold",
        choices=[sv.label for sv in Severity if sv > Severity.INFO],
        help="lowest severity that fails the scan (default: high, or the config's)",
    )
    s.add_argument("-c", "--config", metavar="FILE", help="configuration file to use")
    s.add_argument("--no-config", action="store_true", help="ignore configuration files")
    s.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=0,
        metavar="N",
        help="worker processes (default 0: one per CPU for large trees)",
    )
    s.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="in directories, scan only files matching GLOB (repeatable)",
    )
    s.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="in directories, skip files matching GLOB (repeatable)",
    )
    s.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    s.add_argument(
        "--dynamic",
        action="store_true",
        help="also load each model with its real loader in the sandbox (needs bwrap and strace)",
    )
    s.add_argument(
        "--verify",
        nargs="?",
        const="",
        metavar="SIG",
        help="also verify the model's OpenSSF Model Signing signature (default DIR/model.sig "
        "or FILE.sig); a model it does not vouch for is a critical finding",
    )
    from modelshield import cli_integrity, cli_sandbox

    cli_integrity.add_verifier_arguments(s, "with --verify: ")

    cli_sandbox.add_limit_arguments(s)


def _add_convert(sub: Any) -> None:
    c = sub.add_parser(
        "convert",
        help="convert a checkpoint to safetensors without executing it",
        description="Convert PyTorch (zip or legacy), NumPy .npy/.npz or pickled arrays to "
        "safetensors. The input is scanned first; the pickle is never executed and torch is "
        "not needed.",
    )
    c.add_argument("input", metavar="IN")
    c.add_argument("output", metavar="OUT", nargs="?", help="default: IN with .safetensors")
    c.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    c.add_argument(
        "--strict", action="store_true", help="fail if any non-tensor entry would be left out"
    )
    c.add_argument(
        "--unsafe-convert-flagged",
        action="store_true",
        help="UNSAFE: convert even if the scanner flags the input (nothing is executed)",
    )


def _load_config(args: argparse.Namespace) -> Config:
    if args.no_config:
        cfg = Config()
    elif args.config:
        cfg = load_config_file(Path(args.config))
    else:
        cfg = discover_config(Path.cwd())
    if args.include or args.exclude:
        cfg = replace(
            cfg,
            include=cfg.include + tuple(args.include),
            exclude=cfg.exclude + tuple(args.exclude),
        )
    return cfg


def _use_color(choice: str, stream: TextIO) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    return stream.isatty()


def _cmd_scan(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    if args.jobs < 0:
        raise ModelShieldError("--jobs must be 0 or more")
    if args.verify is None and (args.key or args.trust_root):
        raise ModelShieldError("--key and --trust-root go with --verify")
    if args.verify is not None:
        if len(args.paths) != 1:
            raise ModelShieldError("--verify takes exactly one model PATH")
        if not args.key and not args.trust_root:
            raise ModelShieldError("--verify needs --key PUBKEY or --trust-root CA_PEM")
    threshold = (
        Severity.parse(args.threshold) if args.threshold else cfg.threshold or DEFAULT_THRESHOLD
    )
    progress = None
    if not args.quiet and sys.stderr.isatty():
        progress = _Progress(sys.stderr)
    try:
        result = scan(args.paths, config=cfg, jobs=args.jobs, progress=progress)
    finally:
        if progress:
            progress.close()
    if args.dynamic:
        from modelshield import cli_sandbox
        from modelshield.sandbox import scan_dynamic

        # Raises (exit 2) when the sandbox is unavailable: never an unsandboxed load.
        result = scan_dynamic(result, cli_sandbox.limits_from_args(args))
    if args.verify is not None:
        result = _verify_scanned(args, result)
    out_stream = sys.stdout
    color = args.format == "text" and not args.output and _use_color(args.color, out_stream)
    report = render(result, args.format, threshold=threshold, color=color)
    if args.output:
        tmp = Path(args.output).with_name(Path(args.output).name + ".tmp")
        tmp.write_text(report if report.endswith("\n") else report + "\n", encoding="utf-8")
        os.replace(tmp, args.output)
        if args.format != "text":
            from modelshield.report.text import verdict_line

            print(verdict_line(result, threshold), file=sys.stderr)
    else:
        out_stream.write(report if report.endswith("\n") else report + "\n")
    return exit_code(result, threshold)


def _verify_scanned(args: argparse.Namespace, result: ScanResult) -> ScanResult:
    """``scan --verify``: the signature check's outcome added to the scan's findings (fails
    closed: anything that keeps the signature from verifying is a finding)."""
    from modelshield.signing.api import VerifyResult, verify_model
    from modelshield.signing.errors import VerificationError
    from modelshield.signing.rules import verification_findings

    path = args.paths[0]
    verified: VerifyResult | None = None
    error = None
    try:
        verified = verify_model(
            path,
            args.verify or None,
            public_key=args.key,
            trust_roots=args.trust_root,
            jobs=args.jobs,
        )
    except VerificationError as exc:
        error = str(exc)
    except ModelShieldError:
        raise  # unusable key, certificate or signature path: a usage error (exit 2)
    except Exception as exc:  # fail closed
        error = f"internal error while verifying: {type(exc).__name__}: {exc}"
    if verified is not None and verified.ok:
        print(f"signature verified: {verified.checked} files, {verified.signer}", file=sys.stderr)
    else:
        print("signature verification FAILED (see the MS800/MS801 findings)", file=sys.stderr)
    found = verification_findings(path, verified, error)
    return replace(result, findings=tuple(sorted((*result.findings, *found), key=Finding.sort_key)))


def _cmd_convert(args: argparse.Namespace) -> int:
    from modelshield.convert import convert

    report = convert(
        args.input,
        args.output,
        allow_unsafe=args.unsafe_convert_flagged,
        allow_skipped=not args.strict,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {report.output}: {report.tensors} tensors, {report.bytes_written} bytes, "
        "verified against the source"
    )
    for alias, target in sorted(report.aliases.items()):
        print(f"  tied: {alias} -> {target} (stored once; alias recorded in metadata)")
    for entry in report.skipped:
        print(f"  left out (not a tensor): {entry}", file=sys.stderr)
    return EXIT_CLEAN


def _cmd_fingerprint(args: argparse.Namespace) -> int:
    import json

    from modelshield.fingerprint import fingerprint

    for path in args.paths:
        fp = fingerprint(path)
        if args.json:
            print(
                json.dumps(
                    {
                        "path": path,
                        "fingerprint": fp.value,
                        "scheme": fp.scheme,
                        "tensors": [
                            {
                                "name": t.name,
                                "dtype": t.dtype,
                                "shape": list(t.shape),
                                "sha256": t.sha256,
                            }
                            for t in fp.tensors
                        ],
                    }
                )
            )
        else:
            print(f"{fp.value}  {path}")
    return EXIT_CLEAN


def _cmd_rules() -> int:
    for rule in RULES.values():
        cwe = f" CWE-{rule.cwe}" if rule.cwe else ""
        print(f"{rule.id} {rule.name} [{rule.severity.label}{cwe}]")
        print(f"    {rule.summary}.")
        print(f"    {rule.description}")
    return EXIT_CLEAN


def _cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    from modelshield.demo import write_examples

    with tempfile.TemporaryDirectory(prefix="modelshield-demo-") as tmp:
        benign, malicious = write_examples(Path(tmp))
        result = scan([benign, malicious])
        report = render(
            result,
            args.format,
            threshold=DEFAULT_THRESHOLD,
            color=args.format == "text" and _use_color("auto", sys.stdout),
        )
        print(report.replace(tmp + os.sep, ""))
    flagged = {f.location.path for f in result.at_or_above(DEFAULT_THRESHOLD)}
    ok = str(malicious) in flagged and str(benign) not in flagged and result.complete
    print(
        "demo: the malicious example was flagged and the benign one passed"
        if ok
        else "demo: UNEXPECTED RESULT - please report this",
        file=sys.stderr,
    )
    return EXIT_CLEAN if ok else EXIT_ERROR


def _tune_gc() -> None:
    """For a whole program run (not a call from other code): analyses allocate millions of
    short-lived, acyclic objects, and the default collector thresholds spend ~10% of a scan
    walking them. Objects alive after start-up are frozen (never walked again); the young
    generation is collected every 100 000 allocations instead of 700. Worker processes started
    by fork (Linux) inherit both; ``main(argv)`` called from other code changes neither."""
    gc.freeze()
    gc.set_threshold(100_000, 10, 10)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is not None:
        return _main(argv)
    _tune_gc()
    try:
        return _main(sys.argv[1:])
    finally:
        # The interpreter is about to exit: the collections it runs while shutting down would
        # walk every object left for nothing (~20 ms after a big scan). Objects are still freed.
        gc.freeze()


def _main(given: Sequence[str]) -> int:
    parser = _parser(given[0] if given and given[0] in _COMMANDS else None)
    args = parser.parse_args(list(given))
    try:
        if args.command == "scan":
            return _cmd_scan(args)
        if args.command == "rules":
            return _cmd_rules()
        if args.command == "convert":
            return _cmd_convert(args)
        if args.command == "fingerprint":
            return _cmd_fingerprint(args)
        from modelshield import cli_integrity, cli_sandbox

        if args.command == cli_sandbox.COMMAND:
            return cli_sandbox.run(args)
        if args.command in cli_integrity.COMMANDS:
            return cli_integrity.run(args)
        from modelshield import cli_backdoor

        if args.command == cli_backdoor.COMMAND:
            return cli_backdoor.run(args)
        if args.command == "demo":
            return _cmd_demo(args)
        parser.print_help()
        return EXIT_ERROR
    except UnsafeInputError as exc:
        print(f"modelshield: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_UNSAFE
    except ModelShieldError as exc:
        print(f"modelshield: error: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"modelshield: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("modelshield: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # internal error: exit 2, never a clean-looking result
        print(f"modelshield: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
