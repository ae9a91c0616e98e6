#!/usr/bin/env python3
"""Benchmark ``modelshield convert`` against the usual path on a >= 1 GB PyTorch checkpoint.

The usual path is ``torch.load(path, weights_only=True)`` followed by
``safetensors.torch.save_file``. Both run as subprocesses of the same interpreter in the same
run, round-robin, after one untimed warm-up each, with a warm page cache (the input is read once
before timing). Per tool: median and best wall time of N runs (``-n``, default 3) and peak RSS
(``/usr/bin/time -f %M``). Targets (issue 5):

* speed: modelshield >= 1.5x faster than the usual path (ratio of medians);
* memory: modelshield's peak RSS <= the largest tensor + a small constant. The constant is shown
  as the peak RSS of ``modelshield rules`` (same interpreter, the CLI's imports, no model).

The checkpoint (default ~1.2 GB: one 300 MB float32 tensor, then 150 MB tensors in float32,
bfloat16 and float16, plus a few small ones and a tied pair) is written to ``--dir`` (default
``/tmp``) and removed at the end, as are the outputs (``--keep`` keeps them).

    .venv/bin/python bench/bench_convert.py -n 3 --json /tmp/bench_convert.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MB = 1 << 20

BASELINE = (
    "import sys, torch\n"
    "from safetensors.torch import save_file\n"
    "sd = torch.load(sys.argv[1], weights_only=True)\n"
    "seen = {}\n"
    "for k in list(sd):\n"  # save_file refuses shared tensors: drop tied copies like users do
    "    p = sd[k].untyped_storage().data_ptr()\n"
    "    if p in seen:\n"
    "        del sd[k]\n"
    "    seen[p] = k\n"
    "save_file({k: v.contiguous() for k, v in sd.items()}, sys.argv[2])\n"
)


@dataclass
class Runs:
    name: str
    walls: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)
    anon_kb: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    @property
    def best(self) -> float:
        return min(self.walls)

    @property
    def peak_mb(self) -> float:
        return max(self.rss_kb) / 1024

    @property
    def anon_mb(self) -> float:
        return max(self.anon_kb) / 1024


def make_checkpoint(path: Path, size_gb: float, largest_mb: int) -> tuple[int, int]:
    """Write the checkpoint; return (total tensor bytes, largest tensor bytes)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    sd: dict[str, Any] = {}
    largest = largest_mb * MB // 4
    sd["embed.weight"] = torch.randn(largest // 1024, 1024, generator=gen)
    sd["lm_head.weight"] = sd["embed.weight"]  # tied
    total = largest * 4
    target = int(size_gb * 1024 * MB)
    dtypes = [torch.float32, torch.bfloat16, torch.float16]
    i = 0
    while total < target:
        dtype = dtypes[i % len(dtypes)]
        nbytes = min(150 * MB, target - total)
        n = max(nbytes // dtype.itemsize // 1024, 1)
        sd[f"layers.{i}.weight"] = torch.randn(n, 1024, generator=gen).to(dtype)
        sd[f"layers.{i}.bias"] = torch.randn(1024, generator=gen)
        total += n * 1024 * dtype.itemsize + 1024 * 4
        i += 1
    sd["step"] = torch.tensor(1000)
    torch.save(sd, path)
    return total, largest * 4


def read_once(path: Path) -> None:
    with open(path, "rb") as fh:
        while fh.read(64 * MB):
            pass


def _anon_kb(pid: int) -> int:
    """RssAnon of ``pid`` and its descendants (kB): memory the process owns, not the page cache."""
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith(("RssAnon:", "RssShmem:")):
                total += int(line.split()[1])
        stack += [int(c) for c in children]
    return total


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """Wall time, peak RSS (kB, ``/usr/bin/time``) and sampled peak anonymous RSS (kB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        start = time.perf_counter()
        proc = subprocess.Popen(
            ["/usr/bin/time", "-f", "%M", "-o", tf.name, *cmd],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        anon = 0
        while proc.poll() is None:
            anon = max(anon, _anon_kb(proc.pid))
            time.sleep(0.01)
        wall = time.perf_counter() - start
        err = proc.stderr.read() if proc.stderr else ""
        if proc.returncode != 0:
            raise SystemExit(f"command failed ({proc.returncode}): {cmd}\n{err[-2000:]}")
        rss = int(tf.read().strip().splitlines()[-1])
    return wall, rss, anon


def profile_convert(src: Path, out: Path) -> None:
    """One in-process conversion under cProfile: where the time goes."""
    import cProfile
    import pstats

    from modelshield.convert import convert

    out.unlink(missing_ok=True)
    prof = cProfile.Profile()
    prof.enable()
    convert(str(src), str(out))
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)


def header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        data: dict[str, Any] = json.loads(fh.read(n))
    data.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"]) for k, v in data.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=3, help="timed runs per tool (default 3)")
    ap.add_argument("--size-gb", type=float, default=1.2)
    ap.add_argument("--largest-mb", type=int, default=300)
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint and outputs")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--profile", action="store_true", help="also profile one conversion")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="ms-bench-convert-", dir=args.dir))
    free = shutil.disk_usage(work).free
    if free < 4 * args.size_gb * 1024**3:
        raise SystemExit(f"{work}: {free / 1024**3:.1f} GB free; need ~{4 * args.size_gb:.1f} GB")
    env = dict(os.environ)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    src = work / "model.pt"
    out_ms = work / "model.ms.safetensors"
    out_base = work / "model.base.safetensors"
    try:
        t0 = time.perf_counter()
        total, largest = make_checkpoint(src, args.size_gb, args.largest_mb)
        print(
            f"checkpoint: {src.stat().st_size / MB:.0f} MB on disk, {total / MB:.0f} MB of "
            f"tensors, largest {largest / MB:.0f} MB (written in {time.perf_counter() - t0:.1f}s)"
        )
        read_once(src)
        py = sys.executable
        cmds = {
            "modelshield convert": [py, "-m", "modelshield.cli", "convert", str(src), str(out_ms)],
            "torch.load + save_file": [py, "-c", BASELINE, str(src), str(out_base)],
        }
        outputs = {"modelshield convert": out_ms, "torch.load + save_file": out_base}
        runs = {name: Runs(name) for name in cmds}
        _, const_kb, _ = timed([py, "-m", "modelshield.cli", "rules"], env)
        for rnd in range(args.n + 1):  # round 0: untimed warm-up
            for name, cmd in cmds.items():
                outputs[name].unlink(missing_ok=True)
                wall, rss, anon = timed(cmd, env)
                if rnd:
                    runs[name].walls.append(wall)
                    runs[name].rss_kb.append(rss)
                    runs[name].anon_kb.append(anon)
                print(
                    f"  {'warm-up' if not rnd else f'run {rnd}'}: {name}: {wall:.2f}s, "
                    f"{rss / 1024:.0f} MB peak RSS, {anon / 1024:.0f} MB peak anonymous",
                    flush=True,
                )
        same = header(out_ms) == header(out_base)
        ms, base = runs["modelshield convert"], runs["torch.load + save_file"]
        speedup = base.median / ms.median
        const_mb = const_kb / 1024
        over = ms.peak_mb - largest / MB
        print()
        print(f"{'tool':<24} {'median s':>9} {'best s':>8} {'peak RSS MB':>12} {'anon MB':>8}")
        for r in (ms, base):
            print(
                f"{r.name:<24} {r.median:>9.2f} {r.best:>8.2f} {r.peak_mb:>12.0f} {r.anon_mb:>8.0f}"
            )
        print()
        print(
            f"speed-up (median): {speedup:.2f}x  (best: {base.best / ms.best:.2f}x)  "
            f"target >= 1.5x: {'MET' if speedup >= 1.5 else 'MISSED'}"
        )
        print(
            f"modelshield peak RSS {ms.peak_mb:.0f} MB = largest tensor {largest / MB:.0f} MB "
            f"+ {over:.0f} MB; interpreter + CLI imports alone: {const_mb:.0f} MB"
        )
        print(
            f"modelshield peak anonymous RSS (sampled every 10 ms; excludes the mmap'd input and "
            f"output pages, which are page cache): {ms.anon_mb:.0f} MB = largest tensor + "
            f"{ms.anon_mb - largest / MB:.0f} MB"
        )
        print(f"baseline peak RSS {base.peak_mb:.0f} MB ({base.peak_mb / ms.peak_mb:.1f}x ours)")
        print(f"output headers agree (same names, dtypes, shapes): {same}")
        if args.profile:
            print("\nprofile of one in-process modelshield conversion (top 12 by own time):")
            profile_convert(src, out_ms)
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "checkpoint_bytes": src.stat().st_size,
                        "tensor_bytes": total,
                        "largest_tensor_bytes": largest,
                        "runs": {
                            r.name: {
                                "wall_s": r.walls,
                                "peak_rss_kb": r.rss_kb,
                                "peak_anon_kb": r.anon_kb,
                            }
                            for r in (ms, base)
                        },
                        "speedup_median": speedup,
                        "cli_constant_rss_kb": const_kb,
                        "headers_agree": same,
                    },
                    indent=2,
                )
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
