"""Sandbox overhead: a plain load vs the same load in ``modelshield sandbox``, same run.

For each framework a small benign model is written to a temporary directory, then loaded
alternately (after one untimed warm-up of each) by

* **plain**: a fresh ``python -c 'import <framework>; <load>'`` process (what a user pays to load
  the file at all, framework import included), and
* **sandbox**: :func:`modelshield.sandbox.sandbox_file` (bwrap + seccomp + rlimits + strace
  attached for the load + audit hook + analysis).

Reported: median wall times, the ratio, the added wall time, and the child's own framework
import time, so that "added time beyond the framework's import" can be read directly.

    .venv/bin/python bench/bench_sandbox.py -n 5
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from modelshield.sandbox import sandbox_file

PLAIN = {
    "pickle": "import pickle; pickle.load(open({p!r}, 'rb'))",
    "numpy": "import numpy; numpy.load({p!r}, allow_pickle=True)",
    "joblib": "import joblib, sklearn; joblib.load({p!r})",
    "torch": "import torch; torch.load({p!r}, map_location='cpu', weights_only=False)",
    "keras": "import keras; keras.models.load_model({p!r}, safe_mode=False)",
}


def make_models(d: Path) -> dict[str, Path]:
    import numpy as np

    out: dict[str, Path] = {}
    out["pickle"] = d / "data.pkl"
    out["pickle"].write_bytes(pickle.dumps({"w": list(range(1000)), "name": "m"}))
    out["numpy"] = d / "arr.npy"
    np.save(out["numpy"], np.arange(10000, dtype=np.float32))
    try:
        import joblib
        from sklearn.linear_model import LogisticRegression

        x = np.arange(200, dtype=float).reshape(100, 2)
        out["joblib"] = d / "m.joblib"
        joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 100).astype(int)), out["joblib"])
    except ImportError:
        pass
    try:
        import torch

        out["torch"] = d / "m.pt"
        torch.save(torch.nn.Linear(64, 64).state_dict(), out["torch"])
    except ImportError:
        pass
    try:
        os.environ.setdefault("KERAS_BACKEND", "torch")
        import keras

        out["keras"] = d / "m.keras"
        keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)]).save(out["keras"])
    except ImportError:
        pass
    return out


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5, help="timed runs per mode")
    ap.add_argument("--only", nargs="*", help="frameworks to run")
    ns = ap.parse_args()
    # same interpreter flags and environment as the sandboxed child, so only the sandbox differs
    env = dict(
        os.environ,
        KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "torch"),
        CUDA_VISIBLE_DEVICES="",
        MALLOC_ARENA_MAX="2",
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = make_models(Path(tmp))
        for name, path in models.items():
            if ns.only and name not in ns.only:
                continue
            code = PLAIN[name].format(p=str(path))

            def plain(code: str = code) -> None:
                subprocess.run([sys.executable, "-I", "-B", "-c", code], check=True, env=env)

            imports: list[float] = []

            def boxed(path: Path = path, imports: list[float] = imports) -> None:
                b = sandbox_file(str(path))
                if b.verdict() != "clean":
                    raise SystemExit(f"{path}: unexpected {b.verdict()}: {b.problems}")
                imports.append(b.timings.get("framework_import", 0.0))

            plain()
            boxed()  # warm-up (page cache)
            imports.clear()
            p_times: list[float] = []
            s_times: list[float] = []
            for _ in range(ns.n):
                p_times.append(timed(plain))
                s_times.append(timed(boxed))
            pm, sm = statistics.median(p_times), statistics.median(s_times)
            rows.append((name, pm, sm, sm / pm, sm - pm, statistics.median(imports)))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, n={ns.n} (medians)")
    print("| loader | plain s | sandbox s | ratio | added s | import in sandbox s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, pm, sm, ratio, added, imp in rows:
        print(f"| {name} | {pm:.3f} | {sm:.3f} | {ratio:.2f}x | {added:+.3f} | {imp:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
