"""End-to-end tests of the command line: exit codes, formats, output files, demo."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from modelshield.cli import EXIT_CLEAN, EXIT_ERROR, EXIT_INCOMPLETE, EXIT_UNSAFE, main
from modelshield.demo import MALICIOUS

BENIGN = pickle.dumps({"w": [1.0, 2.0], "name": "layer"}, protocol=4)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.pkl"
    good.write_bytes(BENIGN)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(MALICIOUS)
    zipped = tmp_path / "model.pt"
    zipped.write_bytes(b"PK\x03\x04" + b"\x00" * 60)
    return {"good": good, "bad": bad, "zip": zipped}


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_malicious_file_exits_1_and_shows_the_call(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["scan", "--no-config", str(files["bad"])], capsys)
    assert code == EXIT_UNSAFE
    assert "os.system('echo modelshield-demo-payload')" in out
    assert "MS101" in out
    assert "offset" in out and "opcode #" in out


def test_benign_file_exits_0(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["scan", "--no-config", str(files["good"])], capsys)
    assert code == EXIT_CLEAN
    assert "CLEAN" in out


def test_unanalysed_container_is_incomplete_not_clean(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["scan", "--no-config", str(files["zip"])], capsys)
    assert code == EXIT_INCOMPLETE
    assert "INCOMPLETE" in out


def test_findings_win_over_incomplete(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(["scan", "--no-config", str(files["zip"]), str(files["bad"])], capsys)
    assert code == EXIT_UNSAFE


def test_threshold_critical_and_medium(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A call of a non-allowlisted (unknown) function is HIGH, not CRITICAL.
    unknown = tmp_path / "unknown.pkl"
    unknown.write_bytes(b"\x80\x04\x8c\x05mypkg\x8c\x04func\x93)R.")
    code, _, _ = run(["scan", "--no-config", "-t", "critical", str(unknown)], capsys)
    assert code == EXIT_CLEAN
    code, _, _ = run(["scan", "--no-config", "-t", "high", str(unknown)], capsys)
    assert code == EXIT_UNSAFE


def test_missing_path_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["scan", "--no-config", str(tmp_path / "nope.pkl")], capsys)
    assert code == EXIT_ERROR
    assert "no such file" in err and out == ""


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["scan"])
    assert exc.value.code == EXIT_ERROR
    with pytest.raises(SystemExit) as exc:
        main(["scan", "--format", "xml", "x"])
    assert exc.value.code == EXIT_ERROR


def test_bad_config_exits_2_with_diagnostics(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('ignore = ["MS999"]\n')
    code, _, err = run(["scan", "-c", str(cfg), str(files["good"])], capsys)
    assert code == EXIT_ERROR
    assert "MS999" in err and "Configuration" in err


def test_json_output_file_and_summary(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "report.json"
    code, out, err = run(
        ["scan", "--no-config", "-f", "json", "-o", str(out_file), str(files["bad"])], capsys
    )
    assert code == EXIT_UNSAFE
    assert out == ""
    assert "UNSAFE" in err
    data = json.loads(out_file.read_text())
    assert data["verdict"] == "unsafe"
    assert data["findings"][0]["rule_id"] == "MS101"
    assert data["findings"][0]["evidence"] == "os.system('echo modelshield-demo-payload')"


def test_sarif_to_stdout(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["scan", "--no-config", "-f", "sarif", str(files["bad"])], capsys)
    assert code == EXIT_UNSAFE
    sarif = json.loads(out)
    assert sarif["version"] == "2.1.0"
    assert sarif["runs"][0]["results"][0]["ruleId"] == "MS101"


def test_directory_scan_with_exclude(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        ["scan", "--no-config", "--exclude", "*.bin", "--exclude", "*.pt", str(tmp_path)], capsys
    )
    assert code == EXIT_CLEAN, out


def test_config_discovered_from_working_directory(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.modelshield]\nexclude = ["*.bin", "*.pt"]\n')
    monkeypatch.chdir(tmp_path)
    code, _, _ = run(["scan", "."], capsys)
    assert code == EXIT_CLEAN


def test_rules_lists_every_rule(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["rules"], capsys)
    assert code == EXIT_CLEAN
    for rid in ("MS100", "MS101", "MS102", "MS103", "MS113"):
        assert rid in out


def test_demo_succeeds(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["demo"], capsys)
    assert code == EXIT_CLEAN
    assert "malicious.pkl" in out and "MS101" in out
    assert "flagged" in err


def test_demo_payload_really_runs_with_pickle(tmp_path: Path) -> None:
    """The demo's malicious example is real: pickle.loads runs its echo in a shell."""
    proc = subprocess.run(
        [sys.executable, "-c", "import pickle,sys; pickle.loads(sys.stdin.buffer.read())"],
        input=MALICIOUS,
        capture_output=True,
        check=True,
        cwd=tmp_path,
        env={**os.environ},
    )
    assert b"modelshield-demo-payload" in proc.stdout


def test_console_script_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "modelshield.cli", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("modelshield ")


def test_command_list_matches_the_full_parser() -> None:
    """main() builds only the arguments of the command given; the list it checks against
    must name every subcommand of the full parser."""
    import argparse

    from modelshield.cli import _COMMANDS, _parser

    (sub,) = (a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(_COMMANDS)
    for command in _COMMANDS:
        (one,) = (a for a in _parser(command)._actions if isinstance(a, argparse._SubParsersAction))
        assert command in one.choices and len(one.choices) <= 3  # (sign, verify, bom together)
        full = sub.choices[command].format_help()
        assert one.choices[command].format_help() == full
