"""Scanning safetensors and ONNX models costs time proportional to the header or graph, not
the weights.

Writes two safetensors files with the same tensors (same names, same header size) but weights
1000x apart: ~2 MB and ~2 GB (the large one sparse, so it needs no disk space; the scanner would
have to read it the same way either way); and two ONNX models with the same graph whose
initializer (embedded ``raw_data``) is ~2 MB and ~2 GB (also sparse; needs the ``onnx`` package
to write them, skipped otherwise). Times ``modelshield.scan`` on each and prints the ratios,
which stay near 1 when only the header or graph is read.

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


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len_field(number: int, length: int) -> bytes:
    return _varint(number << 3 | 2) + _varint(length)


def write_onnx(path: str, payload: int) -> bool:
    """A Mul model with one FLOAT initializer of ``payload`` bytes of embedded raw_data, written
    field by field (the weights are a hole in a sparse file). False without ``onnx``."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:
        return False
    n = payload // 4
    head = onnx.ModelProto(ir_version=onnx.IR_VERSION, producer_name="bench")
    tail = onnx.ModelProto(opset_import=[helper.make_opsetid("", 17)])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["X", "W"], ["Y"])],
        "large",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n])],
    ).SerializeToString()
    tensor = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[n]).SerializeToString()
    tensor_len = len(tensor) + len(_len_field(9, payload)) + payload
    graph_len = len(graph) + len(_len_field(5, tensor_len)) + tensor_len
    with open(path, "wb") as fh:
        fh.write(head.SerializeToString() + _len_field(7, graph_len) + graph)
        fh.write(_len_field(5, tensor_len) + tensor + _len_field(9, payload))
        fh.seek(payload, os.SEEK_CUR)
        fh.write(tail.SerializeToString())
    return True


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
        o_small, o_large = os.path.join(d, "small.onnx"), os.path.join(d, "large.onnx")
        if not (write_onnx(o_small, 2_000_000) and write_onnx(o_large, 2_000_000_000)):
            print("onnx: skipped (pip install onnx to write the models)")
            return
        timed(o_large, 2)
        timed(o_small, 2)
        t_small, r_small = timed(o_small, args.repeat)
        t_large, r_large = timed(o_large, args.repeat)
        for label, path, t, r in (
            ("small", o_small, t_small, r_small),
            ("large", o_large, t_large, r_large),
        ):
            print(
                f"onnx {label}: {os.path.getsize(path):>13,} bytes: {t * 1e3:7.2f} ms "
                f"(median of {args.repeat}), read {r:,} B"
            )
        print(
            f"onnx size ratio {os.path.getsize(o_large) / os.path.getsize(o_small):.0f}x, "
            f"time ratio {t_large / t_small:.2f}x"
        )


if __name__ == "__main__":
    main()
