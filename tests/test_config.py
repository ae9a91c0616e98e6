"""Configuration files: discovery, validation, allow entries with reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelshield import ConfigError, scan_bytes
from modelshield.config import discover_config, load_config_file, parse_config
from modelshield.findings import Severity

UNKNOWN_CALL = b"\x80\x04\x8c\x05mypkg\x8c\x04Head\x93)R."


def test_full_config(tmp_path: Path) -> None:
    f = tmp_path / ".modelshield.toml"
    f.write_text(
        'threshold = "medium"\nignore = ["MS105"]\nexclude = ["*.json"]\n'
        '[[allow]]\nname = "mypkg.Head"\nreason = "our classifier head"\n'
        f'[[baseline]]\nsha256 = "{"a" * 64}"\nreason = "reviewed"\nrules = ["MS102"]\n'
    )
    cfg = load_config_file(f)
    assert cfg.threshold is Severity.MEDIUM
    assert cfg.ignore == {"MS105"}
    assert cfg.allow[0].pattern == "mypkg.Head" and cfg.allow[0].origin == str(f)
    assert cfg.baselines[0].rules == frozenset({"MS102"})
    assert scan_bytes(UNKNOWN_CALL).findings
    assert not scan_bytes(UNKNOWN_CALL, config=cfg).findings


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1", "unknown key"),
        ('threshold = "severe"', "unknown severity"),
        ('ignore = ["MS999"]', "unknown rule"),
        ('[[allow]]\nname = "x.y"', "needs a 'reason'"),
        ('[[allow]]\nreason = "r"', "needs a 'name'"),
        ('[[baseline]]\nsha256 = "xyz"\nreason = "r"', "64 hex"),
        ("ignore = [", "invalid TOML"),
    ],
)
def test_invalid_config_is_explained(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / ".modelshield.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config_file(f)
    assert message in str(exc.value)
    assert str(f) in exc.value.diagnostics()


def test_pyproject_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.modelshield]\nignore = ["MS108"]\n')
    sub = tmp_path / "models"
    sub.mkdir()
    cfg = discover_config(sub)
    assert cfg.ignore == {"MS108"}
    assert "[tool.modelshield]" in (cfg.source or "")


def test_pyproject_without_table_is_skipped(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert discover_config(tmp_path).source is None


def test_dotfile_wins_over_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.modelshield]\nignore = ["MS108"]\n')
    (tmp_path / ".modelshield.toml").write_text('ignore = ["MS110"]\n')
    assert discover_config(tmp_path).ignore == {"MS110"}


def test_parse_config_defaults() -> None:
    cfg = parse_config({}, "inline")
    assert cfg.threshold is None and not cfg.allow and not cfg.baselines
