"""Scanning a safetensors model costs time proportional to its header, not its weights.

Writes two safetensors files with the same tensors (same names, same header size) but weights
1000x apart: ~2 MB and ~2 GB (the large one sparse, so it needs no disk space; the scanner would
have to read it the same way either way). Times ``modelshield.scan`` on each and prints the
ratio, which stays near 1 when only the header is read.

    .venv/bin/python bench/bench_headers.py [--repeat 20] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import tempfile
import time

import modelshield

_TENSORS = 200


def write(path: str, bytes_per_tensor: int) -> int:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    off = 0
    for i in range(_TENSORS):
        # Same digit counts in both files' offsets would need equal sizes; pad names instead
        # so both headers have the same length.
        header[f"model.layers.{i:04d}.weight"] = {
            "dtype": "U8",
            "shape": [bytes_per_tensor],
            "data_offsets": [off, off + bytes_per_tensor],
        }
        off += bytes_per_tensor
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8 + 64)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + off)
    return len(raw)


def timed(path: str, repeat: int) -> tuple[float, int]:
    times = []
    read = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = modelshield.scan(path)
        times.append(time.perf_counter() - t0)
        assert not r.findings, r.findings
        read = r.bytes_read
    return statistics.median(times), read


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        small, large = os.path.join(d, "small.safetensors"), os.path.join(d, "large.safetensors")
        hs = write(small, 10_000)  # 200 x 10 kB = 2 MB
        hl = write(large, 10_000_000)  # 200 x 10 MB = 2 GB
        timed(large, 2)  # warm up: imports, policy loading, page cache for both headers
        timed(small, 2)
        t_small, r_small = timed(small, args.repeat)
        t_large, r_large = timed(large, args.repeat)
        print(
            f"small: {os.path.getsize(small):>13,} bytes, header {hs:,} B: "
            f"{t_small * 1e3:7.2f} ms (median of {args.repeat}), read {r_small:,} B"
        )
        print(
            f"large: {os.path.getsize(large):>13,} bytes, header {hl:,} B: "
            f"{t_large * 1e3:7.2f} ms (median of {args.repeat}), read {r_large:,} B"
        )
        print(
            f"size ratio {os.path.getsize(large) / os.path.getsize(small):.0f}x, "
            f"time ratio {t_large / t_small:.2f}x"
        )


if __name__ == "__main__":
    main()
