"""Parser, filter, loader detection and CLI of the sandbox (few sandboxed loads)."""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
from pathlib import Path

import pytest
import sandbox_samples as S
from sandbox_samples import needs_sandbox

from modelshield import cli_sandbox
from modelshield.sandbox import SandboxUnavailable, detect_loader, runner, sandbox_file
from modelshield.sandbox._child import seccomp_program
from modelshield.sandbox.strace import ProcessExit, Signal, Syscall, decode_string, parse

TRACE = """\
7 1.000001 write(4<pipe:[9]>, "{\\"ev\\": \\"loading\\", \\"nonce\\": \\"x\\"}\\n", 35) = 35
7 1.000002 clone(child_stack=NULL, flags=CLONE_VM|CLONE_VFORK|SIGCHLD) = -1 EPERM (Operation \
not permitted)
8 1.000003 execve("/bin/sh", ["sh", "-c", "id"], 0x7ff /* 3 vars */ <unfinished ...>
7 1.000004 openat(AT_FDCWD</tmp>, "out\\n.txt", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 3</tmp/out\\n.txt>
8 1.000005 <... execve resumed>) = -1 EPERM (Operation not permitted) (INJECTED)
7 1.000006 --- SIGXCPU {si_signo=SIGXCPU, si_code=SI_KERNEL} ---
7 1.000007 +++ killed by SIGXCPU +++
"""


def test_strace_parser() -> None:
    recs = list(parse(TRACE))
    calls = [r for r in recs if isinstance(r, Syscall)]
    assert [c.name for c in calls] == ["write", "clone", "openat", "execve"]
    execve = calls[3]
    assert execve.pid == 8 and execve.errno == "EPERM" and execve.injected
    assert decode_string(execve.args[0]) == "/bin/sh"
    assert calls[2].ret_path == "/tmp/out\\n.txt"
    assert decode_string(calls[2].args[1]) == "out\n.txt"
    assert any(isinstance(r, Signal) and r.name == "SIGXCPU" for r in recs)
    assert any(isinstance(r, ProcessExit) and r.signal == "SIGXCPU" for r in recs)


def test_strace_parser_keeps_calls_cut_by_death() -> None:
    recs = list(parse("5 2.0 connect(3<socket:[1]>, {sa_family=AF_INET}, 16 <unfinished ...>\n"))
    assert len(recs) == 1 and isinstance(recs[0], Syscall) and recs[0].ret == "?"


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_seccomp_program_shape(machine: str) -> None:
    prog = seccomp_program(machine)
    assert 10 < len(prog) < 255
    assert prog[0] == (0x20, 0, 0, 4)  # load arch first
    assert prog[-1][0] == 0x06  # ends with a return
    with pytest.raises(OSError):
        seccomp_program("sparc")


def test_detect_loader(tmp_path: Path) -> None:
    p = tmp_path / "m.pkl"
    p.write_bytes(pickle.dumps({"a": 1}))
    assert detect_loader(str(p)) == "pickle"
    j = tmp_path / "m.joblib"
    j.write_bytes(pickle.dumps({"a": 1}))
    assert detect_loader(str(j)) == "joblib"
    n = tmp_path / "x.npy"
    n.write_bytes(b"\x93NUMPY\x01\x00")
    assert detect_loader(str(n)) == "numpy"
    t = tmp_path / "t.txt"
    t.write_text("hello")
    assert detect_loader(str(t)) is None


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli_sandbox.add_parser(parser.add_subparsers())
    return parser.parse_args(["sandbox", *argv])


def test_missing_tools_is_an_error_never_a_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "must-not-exist"
    model = S.write(tmp_path / "m.pkl", S.system(f"touch {marker}"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SandboxUnavailable):
        runner.find_tools()
    assert cli_sandbox.run(_args(str(model))) == cli_sandbox.EXIT_ERROR
    assert "bwrap" in capsys.readouterr().err
    assert not marker.exists()


@needs_sandbox
def test_cli_exit_codes_and_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = S.write(tmp_path / "bad.pkl", S.system("id"))
    good = S.write(tmp_path / "good.pkl", [1, 2, 3])
    slow = S.write(tmp_path / "slow.pkl", S.Reduce(__import__("time").sleep, 30))
    report = tmp_path / "behaviour.json"
    code = cli_sandbox.run(_args(str(bad), "-f", "sarif", "--behaviour-report", str(report)))
    assert code == cli_sandbox.EXIT_UNSAFE
    sarif = json.loads(capsys.readouterr().out)
    assert any(r["ruleId"] == "MS700" for r in sarif["runs"][0]["results"])
    assert json.loads(report.read_text())["results"][0]["verdict"] == "malicious"
    assert cli_sandbox.run(_args(str(good))) == cli_sandbox.EXIT_CLEAN
    assert "CLEAN" in capsys.readouterr().out
    assert cli_sandbox.run(_args(str(slow), "--timeout", "1")) == cli_sandbox.EXIT_INCOMPLETE
    assert "INCONCLUSIVE" in capsys.readouterr().out
    assert cli_sandbox.run(_args(str(good), "-f", "json")) == cli_sandbox.EXIT_CLEAN
    json.loads(capsys.readouterr().out)


@needs_sandbox
def test_scan_dynamic_adds_sandbox_findings(tmp_path: Path) -> None:
    from modelshield.sandbox import scan_dynamic
    from modelshield.scanner import scan

    bad = S.write(tmp_path / "bad.pkl", S.system("id"))
    static = scan([str(bad)])
    merged = scan_dynamic(static)
    assert {c.format for c in merged.coverage} >= {"sandbox:pickle"}
    assert any(f.rule_id.startswith("MS7") for f in merged.findings)
    assert len(merged.findings) > len(static.findings)


@needs_sandbox
def test_sandbox_view_is_minimal(tmp_path: Path) -> None:
    probe = tmp_path / "probe.pkl"
    S.write(probe, S.exec_code("import os\nassert not os.path.exists('/root/.bash_history')"))
    b = sandbox_file(str(probe), "pickle", runner.Limits(timeout_s=10))
    assert b.load_error is None  # /root is not in the sandbox's view
