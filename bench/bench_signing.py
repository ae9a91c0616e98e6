"""Hashing throughput for signing: modelshield vs model_signing on the same model directory.

Both build the OpenSSF model-signing manifest (method ``files``, default ignores) of the same
directory in the same process, alternating runs so background load hits both alike; the
manifests must be identical. The page cache is warmed first (both read the same cached bytes).
Each tool runs with SHA-256 (the default of both) and with BLAKE3 (which both can sign and
verify). The SHA-256 ceiling of the machine is measured too: the same number of bytes hashed
from memory on the same number of threads (every core unless ``-j``), no file reading at all --
no SHA-256 signer can go faster.

    .venv/bin/python bench/bench_signing.py                 # ~2 GB generated under /tmp
    .venv/bin/python bench/bench_signing.py --dir MODEL -n 5
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from modelshield.signing.hashing import CHUNK_SIZE, DEFAULT_IGNORED, Serialization, hash_model

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


def sha256_ceiling(total: int, threads: int) -> dict[str, str]:
    """Hash ``total`` bytes from a 64 MiB buffer in memory on ``threads`` threads (the hashing
    threads of the other rows): the fastest any SHA-256 signer can go on this machine with them
    (no reading, no bookkeeping)."""
    block = memoryview(os.urandom(1 << 20) * 64)

    def run(i: int) -> str:
        h = hashlib.sha256()
        left = total // threads + (total % threads if i == 0 else 0)
        while left > 0:
            piece = block[: min(left, len(block))]
            for i in range(0, len(piece), CHUNK_SIZE):
                h.update(piece[i : i + CHUNK_SIZE])
            left -= len(piece)
        return h.hexdigest()

    with ThreadPoolExecutor(threads) as pool:
        return {str(i): d for i, d in enumerate(pool.map(run, range(threads)))}


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

        def theirs(algorithm: str) -> Callable[[], dict[str, str]]:
            def run() -> dict[str, str]:
                cfg = ms.hashing.Config().use_file_serialization(hashing_algorithm=algorithm)
                m = cfg.hash(root)
                return {rd.identifier: rd.digest.digest_hex for rd in m.resource_descriptors()}

            return run

        def ours(algorithm: str) -> Callable[[], dict[str, str]]:
            ser = Serialization(hash_type=algorithm, ignore_paths=DEFAULT_IGNORED)

            def run() -> dict[str, str]:
                m = hash_model(root, ser, jobs=args.jobs)
                return {r.name: r.digest for r in m.resources}

            return run

        tools: dict[str, Callable[[], dict[str, str]]] = {
            "model_signing sha256": theirs("sha256"),
            "modelshield sha256": ours("sha256"),
            "model_signing blake3": theirs("blake3"),
            "modelshield blake3": ours("blake3"),
            "SHA-256 ceiling": lambda: sha256_ceiling(total, args.jobs or os.cpu_count() or 1),
        }
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in tools}
        digests: dict[str, dict[str, str]] = {}
        for name, fn in tools.items():  # untimed warm-up, also checks the manifests agree
            digests[name] = fn()
        for algo in ("sha256", "blake3"):
            if digests[f"model_signing {algo}"] != digests[f"modelshield {algo}"]:
                print(f"{algo} MANIFESTS DIFFER", file=sys.stderr)
                return 1
        for _ in range(args.n):
            for name, fn in tools.items():
                wall, used, _out = timed(fn)
                results[name].append((wall, used))
        print(f"manifests identical ({len(digests['modelshield sha256'])} files)\n")
        print(f"{'tool':<22}{'median s':>10}{'best s':>9}{'GiB/s med':>11}{'CPU s med':>11}")
        med: dict[str, float] = {}
        best: dict[str, float] = {}
        for name, rows in results.items():
            walls = [w for w, _ in rows]
            med[name], best[name] = statistics.median(walls), min(walls)
            gib = total / 2**30 / med[name]
            cpu_med = statistics.median(c for _, c in rows)
            print(f"{name:<22}{med[name]:>10.2f}{best[name]:>9.2f}{gib:>11.2f}{cpu_med:>11.2f}")
        print("\nthroughput ratios (median, best):")
        for ours_name, theirs_name in (
            ("modelshield sha256", "model_signing sha256"),
            ("modelshield blake3", "model_signing sha256"),
            ("modelshield blake3", "model_signing blake3"),
            ("SHA-256 ceiling", "model_signing sha256"),
        ):
            r_med = med[theirs_name] / med[ours_name]
            r_best = best[theirs_name] / best[ours_name]
            print(f"  {ours_name} / {theirs_name}: {r_med:.2f}x, {r_best:.2f}x")
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
