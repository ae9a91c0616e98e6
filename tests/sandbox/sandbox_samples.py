"""Recipes for sandbox test samples: malicious pickles are built from readable __reduce__s."""

from __future__ import annotations

import builtins
import ctypes
import operator
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

needs_sandbox = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and shutil.which("bwrap") and shutil.which("strace")),
    reason="the sandbox needs bwrap and strace (apt-get install bubblewrap strace)",
)


class Reduce:
    """Pickles as ``func(*args)``: the smallest readable recipe for a payload."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.func, self.args)


def write(path: Path, obj: object) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def system(cmd: str) -> Reduce:
    return Reduce(os.system, cmd)


def popen(argv: list[str]) -> Reduce:
    return Reduce(subprocess.Popen, argv)


def exec_code(code: str) -> Reduce:
    return Reduce(builtins.exec, code)


def connect(port: int) -> Reduce:
    return Reduce(socket.create_connection, ("127.0.0.1", port), 2)


def open_write(path: str) -> Reduce:
    return Reduce(builtins.open, path, "w")


def remove(path: str) -> Reduce:
    return Reduce(os.remove, path)


def fork_exec(cmd: str) -> Reduce:
    import _posixsubprocess

    argv = [b"/bin/sh", b"-c", cmd.encode()]
    return Reduce(
        _posixsubprocess.fork_exec,
        argv,
        [b"/bin/sh"],
        False,
        (),
        None,
        None,
        -1,
        -1,
        -1,
        -1,
        -1,
        -1,
        -1,
        -1,
        True,
        False,
        -1,
        None,
        None,
        None,
        -1,
        None,
        True,
    )


def ctypes_system(cmd: str) -> Reduce:
    libc = Reduce(ctypes.CDLL, "libc.so.6")
    return Reduce(operator.methodcaller("system", cmd.encode()), libc)
