"""Hashing throughput for signing: modelshield vs model_signing on the same model directory.

Both build the OpenSSF model-signing manifest (method ``files``, SHA-256, default ignores) of the
same directory in the same process, alternating runs so background load hits both alike; the
manifests must be identical. The page cache is warmed first (both read the same cached bytes).

    .venv/bin/python bench/bench_signing.py                 # ~2 GB generated under /tmp
    .venv/bin/python bench/bench_signing.py --dir MODEL -n 5
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelshield.signing.hashing import hash_model

# sizes in MiB of a sharded checkpoint plus small files, ~2 GiB in all
LAYOUT = [
    ("model-00001-of-00004.safetensors", 640),
    ("model-00002-of-00004.safetensors", 512),
    ("model-00003-of-00004.safetensors", 512),
    ("model-00004-of-00004.safetensors", 300),
    ("optimizer/extra.bin", 96),
    ("config.json", 0),
    ("tokenizer.json", 2),
]


def generate(root: Path) -> int:
    total = 0
    block = os.urandom(1 << 20)
    for name, mib in LAYOUT:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            if mib == 0:
                fh.write(b'{"model_type": "bench"}')
            for i in range(mib):
                fh.write(block[i % 7 :] + block[: i % 7])
        total += path.stat().st_size
    return total


def dir_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def warm(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                while fh.read(8 << 20):
                    pass


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    c0, t0 = cpu(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, cpu() - c0, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dir", type=Path, help="existing model directory (default: generate one)")
    ap.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("-n", type=int, default=3, help="timed rounds (default 3)")
    ap.add_argument("-j", "--jobs", type=int, default=0, help="modelshield threads (0: per CPU)")
    args = ap.parse_args()
    try:
        ms: Any = importlib.import_module("model_signing")
    except ImportError:
        print("model_signing is not installed: pip install model-signing", file=sys.stderr)
        return 2
    created = None
    if args.dir:
        root = args.dir
        total = dir_size(root)
    else:
        free = shutil.disk_usage(args.tmp).free
        need = sum(m for _, m in LAYOUT) << 20
        if free < need * 2:
            print(f"not enough space in {args.tmp}: {free >> 20} MiB free", file=sys.stderr)
            return 2
        created = Path(tempfile.mkdtemp(prefix="modelshield-bench-sign-", dir=args.tmp))
        root = created / "model"
        root.mkdir()
        total = generate(root)
    try:
        print(f"model: {root} ({total / 2**30:.2f} GiB, {sum(1 for _ in root.rglob('*'))} paths)")
        print(f"cpus: {os.cpu_count()}, python {sys.version.split()[0]}, model_signing ", end="")
        print(importlib.import_module("importlib.metadata").version("model-signing"))
        warm(root)

        def theirs() -> dict[str, str]:
            m = ms.hashing.Config().hash(root)
            return {rd.identifier: rd.digest.digest_hex for rd in m.resource_descriptors()}

        def ours() -> dict[str, str]:
            m = hash_model(root, jobs=args.jobs)
            return {r.name: r.digest for r in m.resources}

        tools: dict[str, Callable[[], dict[str, str]]] = {
            "model_signing": theirs,
            "modelshield": ours,
        }
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in tools}
        digests: dict[str, dict[str, str]] = {}
        for name, fn in tools.items():  # untimed warm-up, also checks the manifests agree
            digests[name] = fn()
        if digests["model_signing"] != digests["modelshield"]:
            print("MANIFESTS DIFFER", file=sys.stderr)
            return 1
        for _ in range(args.n):
            for name, fn in tools.items():
                wall, used, _out = timed(fn)
                results[name].append((wall, used))
        print(f"manifests identical ({len(digests['modelshield'])} files)\n")
        print(f"{'tool':<15}{'median s':>10}{'best s':>9}{'GiB/s med':>11}{'CPU s med':>11}")
        med: dict[str, float] = {}
        for name, rows in results.items():
            walls = [w for w, _ in rows]
            med[name] = statistics.median(walls)
            gib = total / 2**30 / med[name]
            cpu_med = statistics.median(c for _, c in rows)
            print(f"{name:<15}{med[name]:>10.2f}{min(walls):>9.2f}{gib:>11.2f}{cpu_med:>11.2f}")
        ratio = med["model_signing"] / med["modelshield"]
        best = min(w for w, _ in results["model_signing"]) / min(
            w for w, _ in results["modelshield"]
        )
        print(
            f"\nthroughput ratio modelshield/model_signing: median {ratio:.2f}x, best {best:.2f}x"
        )
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
