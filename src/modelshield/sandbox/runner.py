"""Start the sandboxed child under bubblewrap, attach strace from outside, enforce limits.

The isolation is built from well-tested primitives only:

* **bubblewrap** (``bwrap``): new user, pid, network, ipc, uts and cgroup namespaces
  (``--unshare-all``: no network but a private loopback), a read-only view of exactly the
  directories the interpreter needs plus the model file, a private ``tmpfs`` on ``/tmp`` (the
  scratch space, size-limited and thrown away), all capabilities dropped, ``--new-session``
  (no terminal injection) and ``--die-with-parent``;
* **seccomp-bpf** (installed by the child itself before the model is touched, irrevocable and
  inherited): ``execve``/``execveat``, ``fork``/``vfork``, ``clone`` without ``CLONE_THREAD``,
  ``io_uring``, ``ptrace``, ``mount``, namespace, module, keyring and BPF syscalls fail with
  ``EPERM``;
* **strace**, attached by this process to the child (``strace -f -p``) right before the load and
  writing to a file outside the sandbox: the kernel-level record the payload cannot switch off.
  strace also injects ``EPERM`` into ``execve``/``execveat`` (a second lock on program starts);
* **rlimits** set by the child before the load (CPU, address space, file size, processes, open
  files, core dumps) and a **wall-clock limit** enforced here by killing the sandbox.

There is no unsandboxed fallback: when a primitive is missing :class:`SandboxUnavailable` is
raised and nothing is loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelshield.errors import ModelShieldError

CHILD_SCRIPT = Path(__file__).with_name("_child.py")
SCRATCH = "/tmp"  # noqa: S108 - the private tmpfs inside the sandbox
MAX_REPORT_BYTES = 8 * 1024 * 1024
"""Bytes read from the report channel before the rest is discarded (and reported)."""
MAX_TRACE_BYTES = 64 * 1024 * 1024
"""Bytes of the strace log analysed; a longer log is reported as truncated."""
STDERR_TAIL = 4000

TRACED_SYSCALLS = (
    # process creation
    "execve", "execveat", "fork", "vfork", "clone", "clone3",
    # network
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "sendto", "sendmsg", "sendmmsg",
    # file system changes
    "open", "openat", "openat2", "creat", "unlink", "unlinkat", "rename", "renameat",
    "renameat2", "mkdir", "mkdirat", "rmdir", "link", "linkat", "symlink", "symlinkat",
    "truncate", "chmod", "fchmodat", "chown", "lchown", "fchownat", "mknod", "mknodat",
    "memfd_create",
    # escape attempts (all denied by the seccomp filter)
    "ptrace", "mount", "umount2", "unshare", "setns", "pivot_root", "chroot", "bpf",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "keyctl",
    "add_key", "request_key", "perf_event_open", "process_vm_writev", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "seccomp",
    # the report channel: marker, heartbeat, tampering
    "write", "close", "close_range", "dup2", "dup3", "fcntl",
)  # fmt: skip


class SandboxError(ModelShieldError):
    """The sandbox could not be set up or run (nothing was, or could be, observed)."""


class SandboxUnavailable(SandboxError):
    """A required isolation primitive (bubblewrap, strace, seccomp, namespaces) is missing."""

    def diagnostics(self) -> str:
        return (
            f"{self}\nThe sandbox needs bubblewrap (bwrap) and strace on Linux, e.g. "
            "`apt-get install bubblewrap strace`, and a kernel that allows user namespaces "
            "and seccomp. modelshield never loads a model outside the sandbox."
        )


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandboxed load."""

    timeout_s: float = 30.0
    """Wall-clock limit for the load itself (after the framework import)."""
    startup_timeout_s: float = 180.0
    """Wall-clock limit for starting the sandbox and importing the framework."""
    cpu_s: int = 30
    """CPU seconds for the load (RLIMIT_CPU, on top of what the import used)."""
    memory_bytes: int = 4 * 1024**3
    """Address space for the load (RLIMIT_AS, on top of what the import mapped)."""
    file_size_bytes: int = 64 * 1024**2
    """Largest file the child may write (RLIMIT_FSIZE)."""
    scratch_bytes: int = 256 * 1024**2
    """Size of the private ``/tmp`` tmpfs."""
    processes: int = 64
    """RLIMIT_NPROC (threads; process creation is denied outright by seccomp)."""
    open_files: int = 1024
    """RLIMIT_NOFILE."""

    def child_limits(self) -> dict[str, int]:
        return {
            "cpu_s": int(self.cpu_s),
            "memory_bytes": int(self.memory_bytes),
            "file_size_bytes": int(self.file_size_bytes),
            "processes": int(self.processes),
            "open_files": int(self.open_files),
        }


@dataclass
class RawRun:
    """What one sandboxed load produced, before interpretation."""

    path: str
    loader: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    garbled_lines: int = 0
    report_overflow: bool = False
    trace: str = ""
    trace_truncated: bool = False
    exit_status: int | None = None
    """bwrap's exit status (the child's), negative for a signal; None if it had to be killed."""
    timed_out: bool = False
    attached: bool = False
    host_pid: int | None = None
    startup_s: float = 0.0
    load_s: float = 0.0
    total_s: float = 0.0
    stderr: str = ""
    command: list[str] = field(default_factory=list)


def find_tools() -> tuple[str, str]:
    """Paths of bwrap and strace; raises :class:`SandboxUnavailable` when one is missing."""
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable("the sandbox needs Linux (namespaces, seccomp, ptrace)")
    bwrap = shutil.which("bwrap")
    strace = shutil.which("strace")
    missing = [name for name, found in (("bwrap", bwrap), ("strace", strace)) if not found]
    if missing or bwrap is None or strace is None:
        raise SandboxUnavailable(f"required program(s) not found on PATH: {', '.join(missing)}")
    return bwrap, strace


def _visible_dirs(python: str) -> list[str]:
    """Directories the child interpreter needs, read-only: system dirs, prefixes, sys.path."""
    candidates = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"]
    candidates += [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    candidates += [p for p in sys.path if p and os.path.isabs(p)]
    candidates.append(str(Path(python).parent))
    candidates.append(str(CHILD_SCRIPT.parent))
    out: list[str] = []
    for c in candidates:
        if not os.path.isdir(c):
            continue
        c = os.path.normpath(c)
        if c not in out:
            out.append(c)
    # bind parents before children; drop entries already covered by a bound parent
    out.sort(key=lambda p: (p.count(os.sep), p))
    kept: list[str] = []
    for c in out:
        if any(c == k or c.startswith(k.rstrip(os.sep) + os.sep) for k in kept):
            continue
        kept.append(c)
    return kept


_ENV_PASS = ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def bwrap_command(
    bwrap: str,
    python: str,
    model: str,
    options_json: str,
    limits: Limits,
) -> list[str]:
    """The bubblewrap command line for one load (exposed for tests and documentation)."""
    cmd = [
        bwrap,
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(limits.scratch_bytes),
        "--tmpfs",
        SCRATCH,
    ]
    for d in _visible_dirs(python):
        cmd += ["--ro-bind", d, d]
    # /bin -> usr/bin style links: the bind of the target is enough, recreate the link
    for link in ("/bin", "/sbin", "/lib", "/lib64", "/lib32"):
        if os.path.islink(link):
            target = os.readlink(link)
            idx = cmd.index(link) if link in cmd else -1
            if idx > 0 and cmd[idx - 1] == "--ro-bind":
                del cmd[idx - 1 : idx + 2]
            cmd += ["--symlink", target, link]
    cmd += ["--ro-bind", model, model]
    cmd += ["--chdir", SCRATCH, "--clearenv"]
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": SCRATCH,
        "LANG": "C.UTF-8",
        "TMPDIR": SCRATCH,
        "CUDA_VISIBLE_DEVICES": "",
        "MALLOC_ARENA_MAX": "2",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for name in _ENV_PASS:
        if name in os.environ:
            env[name] = os.environ[name]
    for k, v in env.items():
        cmd += ["--setenv", k, v]
    cmd += ["--", python, "-I", "-B", str(CHILD_SCRIPT), options_json]
    return cmd


def strace_command(strace: str, trace_file: str, pid: int) -> list[str]:
    return [
        strace,
        "-f",
        "-q",
        "-ttt",
        "-y",
        "-s",
        "1024",
        "-o",
        trace_file,
        "-e",
        "trace=" + ",".join("?" + s for s in TRACED_SYSCALLS),
        "-e",
        "inject=execve,execveat:error=EPERM",
        "-p",
        str(pid),
    ]


def _proc_table() -> dict[int, tuple[int, int | None, str]]:
    """pid -> (ppid, innermost namespace pid, name) for every visible process."""
    table: dict[int, tuple[int, int | None, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/status").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        ppid = 0
        nspid: int | None = None
        name = ""
        for line in text.splitlines():
            if line.startswith("PPid:"):
                ppid = int(line.split()[1])
            elif line.startswith("NSpid:"):
                nspid = int(line.split()[-1])
            elif line.startswith("Name:"):
                name = line.split(None, 1)[1] if len(line.split()) > 1 else ""
        table[int(entry)] = (ppid, nspid, name)
    return table


def _find_child(root: int, ns_pid: int) -> int | None:
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if table[pid][1] == ns_pid:
            return pid
        stack.extend(children.get(pid, []))
    return None


def _all_traced(pid: int) -> bool:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tasks:
        try:
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text(encoding="ascii")
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("TracerPid:") and line.split()[1] == "0":
                return False
    return True


class _Channel:
    """Reads JSON lines from the report pipe without ever blocking past a deadline."""

    def __init__(self, fd: int, run: RawRun) -> None:
        self.fd = fd
        self.run = run
        self.buf = b""
        self.total = 0
        self.eof = False

    def pump(self, deadline: float) -> None:
        """Read what is available until ``deadline``; returns early at EOF or a new message."""
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if not ready:
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.eof = True
                self._flush(final=True)
                return
            self.total += len(chunk)
            if self.total > MAX_REPORT_BYTES:
                self.run.report_overflow = True
                continue
            self.buf += chunk
            if self._flush():
                return

    def _flush(self, final: bool = False) -> bool:
        got = False
        while b"\n" in self.buf or (final and self.buf):
            if b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
            else:
                line, self.buf = self.buf, b""
            try:
                msg = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                self.run.garbled_lines += 1
                continue
            if isinstance(msg, dict):
                self.run.messages.append(msg)
                got = True
            else:
                self.run.garbled_lines += 1
        return got

    def wait_for(self, ev: str, deadline: float) -> dict[str, Any] | None:
        while True:
            for msg in self.run.messages:
                if msg.get("ev") in (ev, "setup-error"):
                    return msg
            if self.eof or time.monotonic() >= deadline:
                return None
            self.pump(deadline)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_child(
    path: str,
    loader: str,
    limits: Limits | None = None,
    *,
    python: str | None = None,
) -> RawRun:
    """Load ``path`` with ``loader`` in the sandbox and return what was observed.

    Raises :class:`SandboxUnavailable` / :class:`SandboxError` when the sandbox cannot be built
    (the model is then never loaded).
    """
    limits = limits or Limits()
    bwrap, strace = find_tools()
    python = python or sys.executable
    model = os.path.realpath(path)
    if not os.path.isfile(model):
        raise SandboxError(f"{path}: not a regular file")
    run = RawRun(path=path, loader=loader)
    nonce = secrets.token_hex(16)
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="modelshield-sandbox-") as work:
        trace_file = os.path.join(work, "strace.log")
        err_file = os.path.join(work, "stderr.log")
        rep_r, rep_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        opts = json.dumps(
            {
                "loader": loader,
                "path": model,
                "report_fd": rep_w,
                "control_fd": ctl_r,
                "nonce": nonce,
                "limits": limits.child_limits(),
            }
        )
        cmd = bwrap_command(bwrap, python, model, opts, limits)
        run.command = cmd
        tracer: subprocess.Popen[bytes] | None = None
        with open(err_file, "wb") as err:
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=err,
                    stderr=err,
                    pass_fds=(rep_w, ctl_r),
                    start_new_session=True,
                )
            except OSError as exc:
                for fd in (rep_r, rep_w, ctl_r, ctl_w):
                    os.close(fd)
                raise SandboxUnavailable(f"cannot start bwrap: {exc}") from exc
        os.close(rep_w)
        os.close(ctl_r)
        chan = _Channel(rep_r, run)
        try:
            deadline = time.monotonic() + limits.startup_timeout_s
            hello = chan.wait_for("hello", deadline)
            ready = chan.wait_for("ready", deadline) if hello and hello["ev"] == "hello" else hello
            if ready is None or ready.get("ev") != "ready":
                _kill_group(proc)
                proc.wait()
                run.stderr = _tail(err_file)
                detail = ready.get("error") if ready else None
                if detail is None:
                    detail = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else ""
                    detail = detail or f"sandbox exited with status {proc.returncode}"
                raise SandboxUnavailable(f"the sandbox could not be set up: {detail}")
            run.startup_s = time.monotonic() - t_start
            host_pid = _find_child(proc.pid, int(hello["pid"])) if hello else None
            if host_pid is None:
                _kill_group(proc)
                proc.wait()
                raise SandboxError("could not find the sandboxed process to trace")
            run.host_pid = host_pid
            tracer = subprocess.Popen(
                strace_command(strace, trace_file, host_pid),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            attach_deadline = time.monotonic() + 15
            while not _all_traced(host_pid):
                if tracer.poll() is not None or time.monotonic() > attach_deadline:
                    _kill_group(proc)
                    proc.wait()
                    msg = tracer.stderr.read().decode(errors="replace") if tracer.stderr else ""
                    raise SandboxUnavailable(f"strace could not attach: {msg.strip()}")
                time.sleep(0.005)
            run.attached = True
            t_load = time.monotonic()
            os.write(ctl_w, b"go\n")
            load_deadline = t_load + limits.timeout_s
            while not chan.eof and time.monotonic() < load_deadline:
                chan.pump(load_deadline)
            if not chan.eof:
                run.timed_out = True
                _kill_group(proc)
            try:
                proc.wait(timeout=max(1.0, load_deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                run.timed_out = True
                _kill_group(proc)
                proc.wait()
            run.load_s = time.monotonic() - t_load
            if not run.timed_out:
                run.exit_status = proc.returncode
            try:
                tracer.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_group(tracer)
                tracer.wait()
        finally:
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
            if tracer is not None and tracer.poll() is None:
                _kill_group(tracer)
                tracer.wait()
            if tracer is not None and tracer.stderr is not None:
                tracer.stderr.close()
            os.close(rep_r)
            os.close(ctl_w)
        run.stderr = _tail(err_file)
        try:
            with open(trace_file, "rb") as f:
                data = f.read(MAX_TRACE_BYTES + 1)
        except OSError:
            data = b""
        run.trace_truncated = len(data) > MAX_TRACE_BYTES
        run.trace = data[:MAX_TRACE_BYTES].decode("utf-8", "replace")
    run.total_s = time.monotonic() - t_start
    return run


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - STDERR_TAIL))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
