"""Backdoor checks over several seeds: trigger search, STRIP and the training-data audit.

Trains tiny CNNs on scikit-learn's 8x8 digits (``tests/backdoor/backdoor_fixtures.py``): a clean
model and BadNets (2x2 corner patch) and blended (20% uniform-noise blend) backdoors with 3%
poisoning to class 7, for each seed; then runs the analyses exactly as ``modelshield backdoor``
does (defaults) and reports, per attack, the detection rate and target accuracy, the clean false
positives, STRIP's true-positive rate at 5% false rejection, the audit's TPR/FPR and the time per
model analysis.

    .venv/bin/python bench/bench_backdoor.py --seeds 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "backdoor"))

from backdoor_fixtures import ATTACKS, INPUT_SHAPE, NUM_CLASSES, TARGET_CLASS, train_fixture

from modelshield.backdoor import ClassifierSpec, LabelledSet, reverse_engineer
from modelshield.backdoor.audit import audit_training_data
from modelshield.backdoor.strip import calibrate_strip

SPEC = ClassifierSpec(INPUT_SHAPE, (0.0, 1.0), NUM_CLASSES)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=400)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[dict[str, object]] = []
    for attack in ("clean", "badnets", "blended"):
        for seed in range(args.seeds):
            fx = train_fixture(attack, seed)
            clean = LabelledSet(fx.x_clean, fx.y_clean)
            t0 = time.perf_counter()
            nc = reverse_engineer(fx.model, clean, SPEC, steps=args.steps, seed=seed)
            t_nc = time.perf_counter() - t0
            t0 = time.perf_counter()
            det = calibrate_strip(fx.model, clean, SPEC, frr=0.05, seed=seed)
            frr = float(det.check(fx.x_test).flagged.mean())
            tpr = float("nan")
            if attack != "clean":
                keep = fx.y_test != TARGET_CLASS
                tpr = float(det.check(ATTACKS[attack](fx.x_test[keep])).flagged.mean())
            t_strip = time.perf_counter() - t0
            t0 = time.perf_counter()
            au = audit_training_data(
                fx.model, LabelledSet(fx.x_train, fx.y_train), SPEC, reference=clean, seed=seed
            )
            t_audit = time.perf_counter() - t0
            flagged = np.zeros(len(fx.y_train), dtype=bool)
            flagged[list(au.flagged)] = True
            a_tpr = float(flagged[fx.poisoned].mean()) if fx.poisoned.any() else float("nan")
            a_fpr = float(flagged[~fx.poisoned].mean())
            pre = nc.prescreen
            row: dict[str, object] = {
                "attack": attack,
                "seed": seed,
                "acc": fx.clean_accuracy,
                "asr": fx.attack_success,
                "flagged": nc.flagged,
                "target": nc.target,
                "min_mask": min(nc.mask_fractions),
                "max_anom": max(nc.anomaly_indices),
                "pre": pre.suspected if pre else None,
                "strip_tpr": tpr,
                "strip_frr": frr,
                "audit_tpr": a_tpr,
                "audit_fpr": a_fpr,
                "audit_classes": au.poisoned_classes,
                "t_nc": t_nc,
                "t_all": t_nc + t_strip + t_audit,
            }
            rows.append(row)
            print(
                f"{attack:8s} seed {seed}: acc {fx.clean_accuracy:.3f} asr {fx.attack_success:.3f}"
                f" | NC flagged={nc.flagged} target={nc.target} min mask {row['min_mask']:.3f}"
                f" max anomaly {row['max_anom']:.2f} pre-screen={row['pre']}"
                f" | STRIP tpr {tpr:.3f} frr {frr:.3f} | audit tpr {a_tpr:.3f} fpr {a_fpr:.4f}"
                f" classes {au.poisoned_classes} | {t_nc:.1f}s + {t_strip:.1f}s + {t_audit:.1f}s",
                flush=True,
            )
    print(
        "\n| attack | NC flagged (right target) | pre-screen right | STRIP TPR @5% FRR "
        "(test FRR) | audit TPR | audit FPR | analysis s (mean / max) |"
    )
    print("|---|---|---|---|---|---|---|")
    for attack in ("clean", "badnets", "blended"):
        rs = [r for r in rows if r["attack"] == attack]
        n = len(rs)
        n_flagged = sum(bool(r["flagged"]) for r in rs)
        right = sum(r["target"] == TARGET_CLASS for r in rs)
        pre_right = sum(r["pre"] == TARGET_CLASS for r in rs)
        pre_any = sum(r["pre"] is not None for r in rs)

        def mean(key: str, rs: list[dict[str, object]] = rs) -> float:
            return float(np.mean([float(r[key]) for r in rs]))  # type: ignore[arg-type]

        times = [float(r["t_all"]) for r in rs]  # type: ignore[arg-type]
        det_s = f"{n_flagged}/{n} ({right}/{n})"
        pre_s = f"{pre_any}/{n} any" if attack == "clean" else f"{pre_right}/{n}"
        print(
            f"| {attack} | {det_s} | {pre_s} | {mean('strip_tpr'):.3f} ({mean('strip_frr'):.3f}) "
            f"| {mean('audit_tpr'):.3f} | {mean('audit_fpr'):.4f} "
            f"| {np.mean(times):.1f} / {max(times):.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
