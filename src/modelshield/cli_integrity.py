"""Command line for ``modelshield sign``, ``modelshield verify`` and ``modelshield bom``.

``cli.py`` registers these with :func:`add_parsers` and dispatches to :func:`run`. Exit codes:
0 signed / verified / BOM written; 1 verification failed (any problem with the signature or the
model it covers: fail closed); 2 usage or input error (unreadable key, bad option).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

from modelshield.errors import ModelShieldError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2

COMMANDS = ("sign", "verify", "bom")


def add_verifier_arguments(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--key`` and ``--trust-root``: what a signature is checked against (``verify`` and
    ``scan --verify``)."""
    p.add_argument("--key", metavar="PEM", help=f"{prefix}public key (PEM) for key signatures")
    p.add_argument(
        "--trust-root",
        action="append",
        default=[],
        metavar="PEM",
        help=f"{prefix}trusted CA certificate(s) for certificate signatures (repeatable)",
    )


def add_parsers(subparsers: Any) -> None:
    """Register ``sign``, ``verify`` and ``bom`` on an ``add_subparsers()`` object."""
    s = subparsers.add_parser(
        "sign",
        help="sign a model (OpenSSF Model Signing format)",
        description="Sign a model directory or file with an elliptic-curve key (P-256/384/521), "
        "optionally with its certificate chain. Writes a Sigstore bundle that model_signing "
        "can verify.",
    )
    s.add_argument("path", metavar="PATH", help="model directory or file")
    s.add_argument(
        "-s", "--signature", metavar="SIG", help="output (default: DIR/model.sig or FILE.sig)"
    )
    s.add_argument("--key", required=True, metavar="PEM", help="private key (PEM)")
    s.add_argument(
        "--password-env", metavar="VAR", help="read the private key's password from $VAR"
    )
    s.add_argument("--cert", metavar="PEM", help="signing certificate for --key")
    s.add_argument(
        "--chain",
        action="append",
        default=[],
        metavar="PEM",
        help="intermediate/root certificates to include (repeatable)",
    )
    s.add_argument(
        "--ignore", action="append", default=[], metavar="PATH", help="leave PATH out (repeatable)"
    )
    s.add_argument(
        "--no-ignore-git", action="store_true", help="also sign .git, .gitignore, .github, ..."
    )
    s.add_argument("--allow-symlinks", action="store_true", help="hash symlinked files' targets")
    s.add_argument(
        "--shard-size",
        type=int,
        metavar="BYTES",
        help="hash files in shards of BYTES ('shards' method) instead of whole files",
    )
    s.add_argument(
        "--hash",
        choices=["sha256", "blake2b", "blake3"],
        default="sha256",
        help="file digest (default sha256; blake3 is ~3x faster, and model_signing 1.1.1 "
        "verifies it too)",
    )
    s.add_argument("-j", "--jobs", type=int, default=0, metavar="N", help="hashing threads")

    v = subparsers.add_parser(
        "verify",
        help="verify a model against its signature",
        description="Verify an OpenSSF Model Signing signature (made by modelshield or "
        "model_signing) and report every modified, added or missing file. Fails closed.",
    )
    v.add_argument("path", metavar="PATH", help="model directory or file")
    v.add_argument("-s", "--signature", metavar="SIG", help="default: DIR/model.sig or FILE.sig")
    add_verifier_arguments(v)
    v.add_argument(
        "--at",
        metavar="TIME",
        help="check certificates at this ISO 8601 time instead of now",
    )
    v.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="PATH",
        help="do not report PATH as added (signed files are still required)",
    )
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.add_argument("-j", "--jobs", type=int, default=0, metavar="N", help="hashing threads")

    b = subparsers.add_parser(
        "bom",
        help="write a CycloneDX 1.6 ML-BOM for a model",
        description="Inventory a model directory or file: files and hashes, formats, weights "
        "fingerprint, scan verdict and model-card data, as CycloneDX 1.6 JSON.",
    )
    b.add_argument("path", metavar="PATH")
    b.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    b.add_argument("--no-scan", action="store_true", help="do not scan (no verdict properties)")
    b.add_argument("--no-fingerprint", action="store_true", help="skip weight fingerprints")
    b.add_argument("-j", "--jobs", type=int, default=0, metavar="N")


def _err(msg: str) -> None:
    print(f"modelshield: {msg}", file=sys.stderr)


def _sign(args: argparse.Namespace) -> int:
    from modelshield.signing.api import sign_model

    password = None
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            _err(f"error: ${args.password_env} is not set")
            return EXIT_ERROR
        password = value.encode("utf-8")
    result = sign_model(
        args.path,
        args.signature,
        private_key=args.key,
        password=password,
        certificate=args.cert,
        certificate_chain=args.chain,
        ignore_paths=args.ignore,
        ignore_git_paths=not args.no_ignore_git,
        allow_symlinks=args.allow_symlinks,
        method="shards" if args.shard_size else "files",
        hash_type=args.hash,
        shard_size=args.shard_size,
        jobs=args.jobs,
    )
    files = len({r.path for r in result.manifest.resources})
    print(
        f"signed {args.path} ({files} files, {result.manifest.bytes_hashed} bytes) with "
        f"{result.signer}: {result.signature_path}"
    )
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from modelshield.signing.api import verify_model
    from modelshield.signing.errors import SigningError, VerificationError

    if not args.key and not args.trust_root:
        _err("error: verify needs --key PUBKEY or --trust-root CA_PEM")
        return EXIT_ERROR
    at = None
    if args.at:
        try:
            at = datetime.datetime.fromisoformat(args.at)
        except ValueError:
            _err(f"error: --at: not an ISO 8601 time: {args.at!r}")
            return EXIT_ERROR
        if at.tzinfo is None:
            at = at.replace(tzinfo=datetime.UTC)
    try:
        result = verify_model(
            args.path,
            args.signature,
            public_key=args.key,
            trust_roots=args.trust_root,
            at=at,
            ignore_paths=args.ignore,
            jobs=args.jobs,
        )
    except SigningError as exc:
        _err(f"error: {exc.diagnostics()}")
        return EXIT_ERROR
    except VerificationError as exc:
        if args.json:
            print(json.dumps({"path": args.path, "verified": False, "error": str(exc)}))
        _err(exc.diagnostics())
        return EXIT_FAILED
    except Exception as exc:  # fail closed: anything unexpected is a failed verification
        _err(f"verification FAILED: internal error: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    if args.json:
        print(
            json.dumps(
                {
                    "path": args.path,
                    "verified": result.ok,
                    "signer": result.signer,
                    "model_name": result.model_name,
                    "files_checked": result.checked,
                    "modified": list(result.modified),
                    "added": list(result.added),
                    "missing": list(result.missing),
                    "serialization": result.serialization.to_json(),
                }
            )
        )
    else:
        for label, names in (
            ("modified", result.modified),
            ("added", result.added),
            ("missing", result.missing),
        ):
            for name in names:
                print(f"  {label}: {name}")
        if result.ok:
            print(f"verified {args.path}: {result.checked} files signed by {result.signer}")
        else:
            n = len(result.modified) + len(result.added) + len(result.missing)
            print(f"verification FAILED for {args.path}: {n} file(s) differ from the signature")
    return EXIT_OK if result.ok else EXIT_FAILED


def _bom(args: argparse.Namespace) -> int:
    from modelshield.bom import build_bom

    doc = build_bom(
        args.path, scan=not args.no_scan, fingerprints=not args.no_fingerprint, jobs=args.jobs
    )
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if args.output:
        out = Path(args.output)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Run ``sign``, ``verify`` or ``bom`` for parsed ``args``; returns the exit code."""
    if getattr(args, "jobs", 0) < 0:
        _err("error: --jobs must be 0 or more")
        return EXIT_ERROR
    try:
        if args.command == "sign":
            return _sign(args)
        if args.command == "verify":
            return _verify(args)
        if args.command == "bom":
            return _bom(args)
    except ModelShieldError as exc:
        _err(f"error: {exc.diagnostics()}")
        return EXIT_ERROR
    except OSError as exc:
        _err(f"error: {exc}")
        return EXIT_ERROR
    _err(f"error: unknown command {args.command!r}")
    return EXIT_ERROR


__all__ = ["COMMANDS", "add_parsers", "run"]
