"""The child side of the sandbox: runs INSIDE bubblewrap only, never in the caller's process.

This is the one place in modelshield where a real loader (``pickle.load``,
``torch.load(weights_only=False)``, ``joblib.load``, ``numpy.load(allow_pickle=True)``,
``keras.models.load_model(safe_mode=False)``) runs on an untrusted file. It is started by
:mod:`modelshield.sandbox.runner` as ``python -I -B _child.py ...`` inside a bubblewrap sandbox
and must not import modelshield (it is a standalone script).

Sequence (each step reported as one JSON line on the report fd):

1. ``hello`` (with the pid inside the sandbox's pid namespace);
2. import the framework (trusted code; not observed by strace, so its noise is not counted);
3. lower the resource limits (CPU, address space, file size, processes, open files, core);
4. install the audit hook (records only after the marker) and the seccomp filter that makes
   every program start, fork, io_uring, ptrace, mount, namespace and module syscall fail;
5. ``ready``, then block until the parent has attached strace and says ``go``;
6. ``loading`` — the marker: a ``write`` on the report fd that strace records;
7. the real load; ``done`` with the outcome (the heartbeat; a child that never sends it, or
   whose report fd was closed or replaced, is reported by the parent).
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

EXIT_SETUP_FAILED = 70
"""Exit status when the sandbox could not be set up (seccomp, limits): never a clean result."""

MAX_AUDIT_EVENTS = 20000
MAX_ARG_CHARS = 600

# Audit events recorded after the marker, by what they mean (the parent imports these sets to
# judge the events; this file stays standalone: it must not import modelshield).
PROCESS_AUDIT = frozenset(
    {
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "os.startfile",
        "subprocess.Popen",
        "pty.spawn",
    }
)
NET_AUDIT = frozenset(
    {
        "socket.__new__",
        "socket.connect",
        "socket.bind",
        "socket.sendto",
        "socket.sendmsg",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
        "urllib.Request",
        "http.client.connect",
        "ftplib.connect",
        "smtplib.connect",
        "webbrowser.open",
    }
)
FILE_AUDIT = frozenset(
    {
        "os.remove",
        "os.rename",
        "os.rmdir",
        "os.mkdir",
        "os.chmod",
        "os.chown",
        "os.link",
        "os.symlink",
        "os.truncate",
        "os.utime",
        "shutil.rmtree",
        "shutil.move",
        "shutil.copyfile",
        "shutil.copytree",
        "shutil.make_archive",
        "shutil.unpack_archive",
    }
)
NATIVE_AUDIT = frozenset({"ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function"})
AUDIT_EVENTS = (
    PROCESS_AUDIT
    | NET_AUDIT
    | FILE_AUDIT
    | NATIVE_AUDIT
    | frozenset(
        {
            "pickle.find_class",
            "os.kill",
            "open",
            "ctypes.cdata",
            "ctypes.string_at",
            "ctypes.addressof",
            "exec",
            "compile",
            "marshal.loads",
            "code.__new__",
            "function.__new__",
            "builtins.input",
            "import",
            "sys.settrace",
            "sys.setprofile",
            "os.putenv",
            "os.unsetenv",
            "mmap.__new__",
            "resource.setrlimit",
            "resource.prlimit",
            "signal.pthread_kill",
        }
    )
)

_CALLER_EVENTS = frozenset({"exec", "compile", "marshal.loads", "ctypes.dlopen", "open"})

# --- seccomp ------------------------------------------------------------------------------

_EPERM = 1
_ENOSYS = 38
_CLONE_THREAD = 0x00010000

# (audit arch, x32 bit check, {name: nr})
_ARCH: dict[str, tuple[int, bool, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,
        True,
        {
            "execve": 59,
            "execveat": 322,
            "fork": 57,
            "vfork": 58,
            "clone": 56,
            "clone3": 435,
            "ptrace": 101,
            "mount": 165,
            "umount2": 166,
            "unshare": 272,
            "setns": 308,
            "pivot_root": 155,
            "chroot": 161,
            "bpf": 321,
            "init_module": 175,
            "finit_module": 313,
            "delete_module": 176,
            "kexec_load": 246,
            "kexec_file_load": 320,
            "keyctl": 250,
            "add_key": 248,
            "request_key": 249,
            "perf_event_open": 298,
            "process_vm_writev": 311,
            "userfaultfd": 323,
            "io_uring_setup": 425,
            "io_uring_enter": 426,
            "io_uring_register": 427,
            "seccomp": 317,
        },
    ),
    "aarch64": (
        0xC00000B7,
        False,
        {
            "execve": 221,
            "execveat": 281,
            "clone": 220,
            "clone3": 435,
            "ptrace": 117,
            "mount": 40,
            "umount2": 39,
            "unshare": 97,
            "setns": 268,
            "pivot_root": 41,
            "chroot": 51,
            "bpf": 280,
            "init_module": 105,
            "finit_module": 273,
            "delete_module": 106,
            "kexec_load": 104,
            "kexec_file_load": 294,
            "keyctl": 219,
            "add_key": 217,
            "request_key": 218,
            "perf_event_open": 241,
            "process_vm_writev": 271,
            "userfaultfd": 282,
            "io_uring_setup": 425,
            "io_uring_enter": 426,
            "io_uring_register": 427,
            "seccomp": 277,
        },
    ),
}

_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_JSET_K = 0x45
_BPF_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000


def seccomp_program(machine: str) -> list[tuple[int, int, int, int]]:
    """The BPF program: deny program starts, forks (clone without CLONE_THREAD) and escapes.

    ``clone3`` fails with ENOSYS so that glibc falls back to ``clone``, whose flags a classic
    BPF filter can inspect (threads stay allowed). A foreign architecture is killed.
    """
    if machine not in _ARCH:
        raise OSError(f"seccomp filter not available for {machine}")
    arch, x32, nrs = _ARCH[machine]
    deny = [nr for name, nr in nrs.items() if name not in ("clone", "clone3")]
    # Symbolic program: ("ld", k) | ("jeq"/"jge"/"jset", k, true_label, false_label) |
    # ("ret", k) | ("label", name). Labels resolve to relative jumps.
    prog: list[tuple[Any, ...]] = [
        ("ld", 4),
        ("jeq", arch, None, "kill"),
        ("ld", 0),
    ]
    if x32:
        prog.append(("jge", 0x40000000, "eperm", None))
    for nr in deny:
        prog.append(("jeq", nr, "eperm", None))
    prog.append(("jeq", nrs["clone3"], "enosys", None))
    prog.append(("jeq", nrs["clone"], "clone", None))
    prog += [
        ("ret", _RET_ALLOW),
        ("label", "clone"),
        ("ld", 16),
        ("jset", _CLONE_THREAD, "allow", "eperm"),
        ("label", "allow"),
        ("ret", _RET_ALLOW),
        ("label", "eperm"),
        ("ret", _RET_ERRNO | _EPERM),
        ("label", "enosys"),
        ("ret", _RET_ERRNO | _ENOSYS),
        ("label", "kill"),
        ("ret", _RET_KILL_PROCESS),
    ]
    labels: dict[str, int] = {}
    index = 0
    for ins in prog:
        if ins[0] == "label":
            labels[ins[1]] = index
        else:
            index += 1
    out: list[tuple[int, int, int, int]] = []
    for ins in prog:
        op = ins[0]
        if op == "label":
            continue
        pos = len(out)
        if op == "ld":
            out.append((_BPF_LD_W_ABS, 0, 0, ins[1]))
        elif op == "ret":
            out.append((_BPF_RET_K, 0, 0, ins[1]))
        else:
            code = {"jeq": _BPF_JEQ_K, "jge": _BPF_JGE_K, "jset": _BPF_JSET_K}[op]

            def rel(label: str | None, here: int = pos) -> int:
                if label is None:
                    return 0
                off = labels[label] - here - 1
                if not 0 <= off <= 255:
                    raise OSError("seccomp program too long")
                return off

            out.append((code, rel(ins[2]), rel(ins[3]), ins[1]))
    return out


def install_seccomp() -> None:
    """Install the filter with ``prctl(PR_SET_SECCOMP)``; raises OSError if the kernel refuses."""
    prog = seccomp_program(platform.machine())
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    libc.prctl.restype = ctypes.c_int
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
    if libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP failed")


def allow_tracer() -> None:
    """Let the parent's strace attach even under Yama ptrace_scope=1 (PR_SET_PTRACER_ANY)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    libc.prctl(0x59616D61, ctypes.c_ulong(-1).value, 0, 0, 0)


# --- limits -------------------------------------------------------------------------------


def _vm_size() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def set_limits(limits: dict[str, int]) -> dict[str, int]:
    """Lower soft and hard limits relative to what the framework import already uses."""
    applied: dict[str, int] = {}
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime) + 1 + limits["cpu_s"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    applied["cpu_s"] = cpu
    mem = _vm_size() + limits["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    applied["address_space_bytes"] = mem
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_size_bytes"],) * 2)
    applied["file_size_bytes"] = limits["file_size_bytes"]
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"],) * 2)
    applied["processes"] = limits["processes"]
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"],) * 2)
    applied["open_files"] = limits["open_files"]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return applied


# --- reporting ----------------------------------------------------------------------------


def _short(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value[:MAX_ARG_CHARS]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value[:MAX_ARG_CHARS]).decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [_short(v) for v in value[:32]]
    code = getattr(value, "co_filename", None)
    if isinstance(code, str):
        return {"code": getattr(value, "co_name", "?"), "filename": code[:MAX_ARG_CHARS]}
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text[:MAX_ARG_CHARS]


class Reporter:
    """Writes JSON lines to the report fd with references taken before the model runs."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._write: Callable[[int, memoryview], int] = os.write
        self._dumps: Callable[..., str] = json.dumps
        self._getframe = sys._getframe
        self.recording = False
        self.count = 0
        self.dropped = 0

    def send(self, event: dict[str, Any]) -> None:
        try:
            data = (self._dumps(event, default=str) + "\n").encode("utf-8", "replace")
            view = memoryview(data)
            while view:
                n = self._write(self.fd, view)
                view = view[n:]
        except Exception:  # noqa: S110 - the parent notices the missing events
            pass

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.recording or event not in AUDIT_EVENTS:
            return
        if self.count >= MAX_AUDIT_EVENTS:
            self.dropped += 1
            return
        self.recording = False  # no recursion through our own repr/json calls
        try:
            record: dict[str, Any] = {"ev": "audit", "event": event}
            if event in _CALLER_EVENTS:
                try:
                    frame = self._getframe(1)
                    caller = frame.f_code.co_filename
                    if caller.startswith("<frozen importlib"):
                        return  # the import system loading an installed module
                    record["caller"] = [caller, frame.f_code.co_name]
                except ValueError:
                    pass
            if event == "marshal.loads" and args and isinstance(args[0], (bytes, bytearray)):
                record["args"] = [f"<{len(args[0])} bytes>"]
            else:
                record["args"] = _short(list(args))
            self.count += 1
            self.send(record)
        finally:
            self.recording = True


# --- loaders ------------------------------------------------------------------------------


def _optional(module: str) -> None:
    import contextlib
    import importlib

    with contextlib.suppress(ImportError):
        importlib.import_module(module)


def _prepare(loader: str) -> Callable[[str], object]:
    """Import the framework (before the marker) and return the function that loads a file."""
    if loader == "pickle":
        import pickle

        _optional("numpy")  # most pickled models hold arrays: keep its import out of the trace

        def load_pickle(path: str) -> object:
            with open(path, "rb") as f:
                return pickle.load(f)  # noqa: S301 - this is the sandbox

        return load_pickle
    if loader == "torch":
        import torch

        def load_torch(path: str) -> object:
            return torch.load(path, map_location="cpu", weights_only=False)

        return load_torch
    if loader == "joblib":
        import joblib

        _optional("sklearn")  # joblib files are mostly scikit-learn estimators

        def load_joblib(path: str) -> object:
            return joblib.load(path)

        return load_joblib
    if loader == "numpy":
        import numpy

        def load_numpy(path: str) -> object:
            obj = numpy.load(path, allow_pickle=True)
            if hasattr(obj, "files"):  # NpzFile: members load lazily
                with obj:
                    return {k: obj[k] for k in obj.files}
            return obj

        return load_numpy
    if loader == "keras":
        if "KERAS_BACKEND" not in os.environ:
            import importlib.util

            if importlib.util.find_spec("tensorflow") is None:
                os.environ["KERAS_BACKEND"] = (
                    "torch" if importlib.util.find_spec("torch") is not None else "jax"
                )
        import keras

        def load_keras(path: str) -> object:
            return keras.models.load_model(path, safe_mode=False)

        return load_keras
    raise ValueError(f"unknown loader {loader!r}")


def _describe(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"[:200]


def main(argv: list[str]) -> int:
    opts = json.loads(argv[1])
    rep = Reporter(int(opts["report_fd"]))
    control_fd = int(opts["control_fd"])
    rep.send({"ev": "hello", "pid": os.getpid(), "python": sys.version.split()[0]})
    t0 = time.monotonic()
    try:
        load = _prepare(opts["loader"])
    except Exception as exc:
        rep.send({"ev": "setup-error", "stage": "import", "error": f"{type(exc).__name__}: {exc}"})
        return EXIT_SETUP_FAILED
    import_s = time.monotonic() - t0
    try:
        applied = set_limits(opts["limits"])
        sys.addaudithook(rep.hook)
        allow_tracer()
        install_seccomp()
    except Exception as exc:
        rep.send({"ev": "setup-error", "stage": "confine", "error": f"{type(exc).__name__}: {exc}"})
        return EXIT_SETUP_FAILED
    rep.send({"ev": "ready", "import_s": import_s, "limits": applied})
    go = os.read(control_fd, 16)
    if go != b"go\n":
        return EXIT_SETUP_FAILED
    os.close(control_fd)
    rep.recording = True
    rep.send({"ev": "loading", "nonce": opts["nonce"]})
    t1 = time.monotonic()
    outcome: dict[str, Any]
    try:
        obj = load(opts["path"])
        outcome = {"ok": True, "type": _describe(obj)}
    except BaseException as exc:  # report everything, incl. SystemExit
        outcome = {"ok": False, "error": type(exc).__name__, "message": str(exc)[:MAX_ARG_CHARS]}
    rep.recording = False
    rep.send(
        {
            "ev": "done",
            "nonce": opts["nonce"],
            "load_s": time.monotonic() - t1,
            "audit_dropped": rep.dropped,
            **outcome,
        }
    )
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
