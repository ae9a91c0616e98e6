"""Command line for ``modelshield backdoor``: behaviour checks of a PyTorch classifier.

``cli.py`` registers the command with :func:`add_parser` and dispatches to :func:`run`. Exit
codes: 0 nothing suspicious; 1 a backdoor is suspected, or inputs (``--check``) or training
samples (``--train``) were flagged, or the model file was refused by the scan; 2 usage or input
error (including PyTorch not installed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from modelshield.errors import ModelShieldError

EXIT_OK = 0
EXIT_SUSPICIOUS = 1
EXIT_ERROR = 2

COMMAND = "backdoor"


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc


def add_parser(subparsers: Any) -> None:
    """Register ``backdoor`` on an ``add_subparsers()`` object."""
    b = subparsers.add_parser(
        COMMAND,
        help="look for backdoor triggers in a PyTorch classifier (needs modelshield[backdoor])",
        description="Reverse-engineer per-class triggers (Neural Cleanse with a data-free "
        "max-margin pre-screen), optionally check inputs at run time (STRIP) and audit "
        "training data for poisoned samples (activation clustering, spectral signatures). "
        "MODEL is safetensors weights with --arch, or a TorchScript archive; it is scanned "
        "first and never unpickled.",
    )
    b.add_argument(
        "model", metavar="MODEL", help="safetensors weights (with --arch) or TorchScript"
    )
    b.add_argument(
        "--arch", metavar="PKG.MODULE:CLASS", help="architecture to build (your trusted code)"
    )
    b.add_argument("--arch-kwargs", metavar="JSON", help="keyword arguments for the class")
    b.add_argument(
        "--input-shape", type=_ints, required=True, metavar="C,H,W", help="one input's shape"
    )
    b.add_argument(
        "--value-range", type=_floats, default=(0.0, 1.0), metavar="LO,HI", help="default 0,1"
    )
    b.add_argument("--num-classes", type=int, required=True, metavar="K")
    b.add_argument(
        "--clean",
        required=True,
        metavar="NPZ",
        help="clean samples: .npz with 'x' (N,C,H,W) and 'y'; at least ~10 per class",
    )
    b.add_argument("--train", metavar="NPZ", help="labelled training set to audit for poisoning")
    b.add_argument("--check", metavar="NPZ", help="inputs ('x') to check with STRIP")
    b.add_argument(
        "--frr", type=float, default=0.05, help="STRIP false-rejection rate on clean inputs"
    )
    b.add_argument(
        "-o", "--out-dir", metavar="DIR", help="write report.json and per-class triggers here"
    )
    b.add_argument("--json", action="store_true", help="print the JSON report to stdout")
    b.add_argument("--steps", type=int, default=400, help="trigger optimisation steps")
    b.add_argument(
        "--max-mask-fraction",
        type=float,
        default=None,
        metavar="F",
        help="largest trigger (share of the input area) that can be flagged (default 0.08)",
    )
    b.add_argument("--no-prescreen", action="store_true", help="skip the max-margin pre-screen")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--threads", type=int, default=0, help="PyTorch threads (default: its own)")


def _report(args: argparse.Namespace) -> tuple[dict[str, Any], bool, Any]:
    from dataclasses import replace

    import numpy as np

    from modelshield.backdoor import (
        ClassifierSpec,
        DecisionRule,
        load_classifier,
        load_npz,
        reverse_engineer,
    )
    from modelshield.backdoor._deps import BackdoorError, require_torch
    from modelshield.backdoor.audit import audit_training_data
    from modelshield.backdoor.model import parse_arch_kwargs, require_per_class
    from modelshield.backdoor.strip import calibrate_strip

    torch = require_torch()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if len(args.value_range) != 2:
        raise BackdoorError("--value-range takes two numbers: LO,HI")
    if args.steps < 1:
        raise BackdoorError("--steps must be at least 1")
    spec = ClassifierSpec(tuple(args.input_shape), tuple(args.value_range), args.num_classes)
    started = time.perf_counter()
    model = load_classifier(
        args.model, architecture=args.arch, arch_kwargs=parse_arch_kwargs(args.arch_kwargs)
    )
    clean = load_npz(args.clean, spec)
    warnings = require_per_class(clean, spec, args.clean)
    rule = DecisionRule()
    if args.max_mask_fraction is not None:
        rule = replace(rule, max_mask_fraction=args.max_mask_fraction)
    result = reverse_engineer(
        model,
        clean,
        spec,
        steps=args.steps,
        seed=args.seed,
        rule=rule,
        run_prescreen=not args.no_prescreen,
    )
    suspicious = result.flagged
    report: dict[str, Any] = {
        "model": args.model,
        "architecture": args.arch,
        "input_shape": list(spec.input_shape),
        "value_range": list(spec.value_range),
        "num_classes": spec.num_classes,
        "clean_samples": len(clean.x),
        "warnings": warnings,
        "trigger_search": {
            "flagged": result.flagged,
            "target_class": result.target,
            "reason": result.reason,
            "rule": {
                "min_anomaly_index": rule.min_anomaly_index,
                "max_mask_fraction": rule.max_mask_fraction,
                "max_median_ratio": rule.max_median_ratio,
                "mad_floor": rule.mad_floor,
            },
            "classes": [
                {
                    "class": t.label,
                    "mask_fraction": round(t.mask_fraction, 5),
                    "anomaly_index": round(t.anomaly_index, 3),
                    "attack_success": round(t.attack_success, 4),
                    "reached": t.reached,
                }
                for t in result.triggers
            ],
            "seconds": round(result.seconds, 2),
        },
    }
    if result.prescreen is not None:
        pre = result.prescreen
        report["prescreen"] = {
            "max_margin": [round(v, 3) for v in pre.max_margin],
            "anomaly_index": [round(v, 3) for v in pre.anomaly_index],
            "suspected_class": pre.suspected,
        }
    if args.check:
        checked = load_npz(args.check, spec, labels=False)
        detector = calibrate_strip(model, clean, spec, frr=args.frr, seed=args.seed)
        strip = detector.check(checked.x)
        report["strip"] = {
            "frr": args.frr,
            "threshold": round(strip.threshold, 5),
            "inputs": len(checked.x),
            "flagged": strip.flagged_indices,
            "entropy": [round(float(v), 5) for v in strip.entropy],
        }
        suspicious = suspicious or bool(strip.flagged.any())
    if args.train:
        train = load_npz(args.train, spec)
        audit = audit_training_data(model, train, spec, reference=clean, seed=args.seed)
        report["audit"] = {
            "feature_source": audit.feature_source,
            "poisoned_classes": list(audit.poisoned_classes),
            "flagged": list(audit.flagged),
            "classes": [
                {
                    "class": c.label,
                    "samples": c.samples,
                    "small_cluster_share": round(c.small_cluster_share, 4),
                    "silhouette": round(c.silhouette, 4),
                    "reference_share": None
                    if c.reference_share is None
                    else round(c.reference_share, 4),
                    "poisoned": c.poisoned,
                    "flagged": list(c.flagged),
                }
                for c in audit.classes
            ],
            "spectral_top": [int(i) for i in np.argsort(-audit.spectral_score)[:50]],
        }
        suspicious = suspicious or bool(audit.flagged)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report, suspicious, result


def _write_outputs(out_dir: Path, report: dict[str, Any], result: Any) -> None:
    import numpy as np

    from modelshield.backdoor.png import write_png

    out_dir.mkdir(parents=True, exist_ok=True)
    for t in result.triggers:
        side = max(t.mask.shape)
        scale = max(1, 128 // side)
        write_png(out_dir / f"trigger_class{t.label}.png", t.trigger_image, scale=scale)
        write_png(out_dir / f"mask_class{t.label}.png", t.mask, scale=scale)
        np.save(out_dir / f"mask_class{t.label}.npy", t.mask)
        np.save(out_dir / f"pattern_class{t.label}.npy", t.pattern)
    tmp = out_dir / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out_dir / "report.json")


def _print_text(report: dict[str, Any]) -> None:
    ts = report["trigger_search"]
    print(f"{report['model']}: {ts['reason']}")
    sizes = ", ".join(
        f"{c['class']}:{c['mask_fraction']:.3f}({c['anomaly_index']:+.1f})" for c in ts["classes"]
    )
    print(f"  mask size per class (anomaly index): {sizes}")
    if "prescreen" in report:
        pre = report["prescreen"]
        cls = pre["suspected_class"]
        print(f"  max-margin pre-screen: {'class ' + str(cls) if cls is not None else 'nothing'}")
    if "strip" in report:
        st = report["strip"]
        print(
            f"  STRIP: {len(st['flagged'])} of {st['inputs']} inputs flagged "
            f"(entropy < {st['threshold']:.4f}, {st['frr']:.0%} false rejection on clean inputs)"
        )
    if "audit" in report:
        au = report["audit"]
        print(
            f"  training-data audit: {len(au['flagged'])} samples flagged in classes "
            f"{au['poisoned_classes'] or 'none'}"
        )
    for w in report["warnings"]:
        print(f"  warning: {w}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run ``modelshield backdoor``; errors propagate as :class:`ModelShieldError` subclasses."""
    if not 0 < args.frr < 0.5:
        raise ModelShieldError("--frr must be between 0 and 0.5")
    report, suspicious, result = _report(args)
    if args.out_dir:
        _write_outputs(Path(args.out_dir), report, result)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
        if args.out_dir:
            print(f"  report and triggers written to {args.out_dir}")
    return EXIT_SUSPICIOUS if suspicious else EXIT_OK
