"""Coverage semantics end to end, in every report format, and directory scanning.

Every input and every archive member ends as scanned / partial / skipped (with the reason) /
inconclusive; reports name the formats recognised; directory walks honour include/exclude,
run in parallel with identical results, report progress, and never follow a symlink out of the
tree without saying so.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from modelshield import Config, CoverageStatus, ScanResult, Severity, scan
from modelshield.analysis import ContainerLimits
from modelshield.cli import main
from modelshield.findings import Coverage
from modelshield.pickle.machine import Limits
from modelshield.report.json import schema, to_dict
from modelshield.report.sarif import to_sarif
from modelshield.report.text import render_text
from modelshield.scanner import Analyzer, FileTask

sys.path.insert(0, str(Path(__file__).resolve().parent / "pickle"))
from pickle_recipes import (  # type: ignore[import-not-found, unused-ignore]
    Reduce,
    shell_touch,
)

BENIGN = pickle.dumps({"epoch": 1, "weights": [0.25, 0.5]}, protocol=4)
HIGH = Severity.HIGH


def zip_bytes(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def tar_gz_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def malicious(marker: Path) -> bytes:
    data = pickle.dumps(Reduce(os.system, shell_touch(marker)), protocol=4)
    pickle.loads(data)
    assert marker.exists(), "the payload did not run: the sample proves nothing"
    marker.unlink()
    return data


def deep_zip(levels: int) -> bytes:
    blob = zip_bytes([("model.pkl", BENIGN)])
    for i in range(levels):
        blob = zip_bytes([(f"l{i}.zip", blob)])
    return blob


def key(c: Coverage) -> tuple[str, str | None]:
    return (c.path, c.member)


def rel(root: Path, c: Coverage) -> str:
    return Path(c.path).relative_to(root).as_posix()


# ---------------------------------------------------------------------------------- a mixed tree


def write_mixed_tree(root: Path, marker: Path) -> Path:
    """30 files: pickles (one malicious), archives, compressed streams, text, data, a gap."""
    bad = malicious(marker)
    files: dict[str, bytes] = {
        "model.pkl": BENIGN,
        "evil/model.pkl": bad,
        "config.json": b'{"hidden_size": 8}',
        "README.md": b"# model\n",
        "weights.bin": bytes(range(256)) * 16,
        "bundle.zip": zip_bytes([("a.pkl", BENIGN), ("b.txt", b"hi"), ("dir/", b"")]),
        "evil/bundle.zip": zip_bytes([("nested/model.pkl", bad)]),
        "bundle.tar.gz": tar_gz_bytes([("a.pkl", BENIGN), ("c.json", b"{}")]),
        "stream.pkl.gz": gzip.compress(BENIGN),
        "deep.zip": deep_zip(10),  # beyond the default depth: inconclusive
        # recognised, but its header cannot be read: numpy.load could still try it
        "weights.npy": b"\x93NUMPY\x01\x00\x0c\x00{'descr': ?}" + bytes(16),
        "empty.bin": b"",
    }
    for i in range(18):
        files[f"shard/part{i:02d}.{'pkl' if i % 3 else 'txt'}"] = (
            pickle.dumps(list(range(i)), protocol=i % 6) if i % 3 else f"shard {i}\n".encode()
        )
    assert len(files) == 30
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_mixed_tree(tmp_path / "tree", tmp_path / "pwned")


def comparable(result: ScanResult) -> tuple[object, ...]:
    return (result.findings, result.coverage, result.errors, result.suppressed, result.bytes_read)


# ---------------------------------------------------------------------------------- coverage


def test_every_input_and_member_has_a_coverage_entry(tree: Path) -> None:
    result = scan(tree)

    tops = {c.path for c in result.coverage if c.member is None}
    on_disk = {str(p) for p in tree.rglob("*") if p.is_file()}
    assert tops == on_disk
    members = {key(c) for c in result.coverage if c.member is not None}
    names = ("bundle.zip", "evil/bundle.zip", "bundle.tar.gz", "stream.pkl.gz")
    z, e, t, g = (str(tree / n) for n in names)
    assert {(z, "a.pkl"), (z, "b.txt")} <= members
    assert (z, "dir/") not in members  # directory entries hold nothing to analyse
    assert (e, "nested/model.pkl") in members
    gz = "<gzip content>"
    assert {(t, gz), (t, f"{gz} > a.pkl"), (t, f"{gz} > c.json")} <= members
    assert (g, "<gzip content>") in members
    # Each entry has one of the four statuses, and every non-scanned one says why.
    for c in result.coverage:
        assert isinstance(c.status, CoverageStatus)
        if c.status is not CoverageStatus.SCANNED:
            assert c.reason, c


def test_incomplete_means_a_loader_could_run_it_but_we_could_not_analyse_it(tree: Path) -> None:
    result = scan(tree)
    by_key = {key(c): c for c in result.coverage}

    npy = by_key[(str(tree / "weights.npy"), None)]
    assert (npy.status, npy.format) == (CoverageStatus.INCONCLUSIVE, "numpy")
    deep = [c for c in result.coverage if c.path.endswith("deep.zip")]
    assert any(
        c.status is CoverageStatus.INCONCLUSIVE and "nesting" in (c.reason or "") for c in deep
    )
    # Plain data is recognised and complete: never a gap.
    data_files = (("config.json", "text"), ("weights.bin", "binary-data"), ("empty.bin", "empty"))
    for name, fmt in data_files:
        c = by_key[(str(tree / name), None)]
        assert (c.status, c.format) == (CoverageStatus.SCANNED, fmt)
    assert not result.complete
    assert result.at_or_above(HIGH)  # the malicious pickles decide the verdict


def test_limits_make_coverage_partial_per_member(tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    path.write_bytes(zip_bytes([(f"m{i}.pkl", BENIGN) for i in range(20)]))
    analyzer = Analyzer(Config(), Limits(), containers=ContainerLimits(max_members=5))
    out = analyzer.scan_file(FileTask(str(path), "many.zip"))
    assert [c.status for c in out.coverage if c.member is None] == [CoverageStatus.PARTIAL]
    assert len([c for c in out.coverage if c.member is not None]) == 5
    assert [f.rule_id for f in out.findings] == ["MS203"]


# ---------------------------------------------------------------------------------- reports


def test_json_report_lists_member_coverage(tree: Path) -> None:
    result = scan(tree)
    report = to_dict(result, threshold=HIGH)

    import jsonschema

    jsonschema.validate(report, schema())
    entries = report["coverage"]
    assert len(entries) == len(result.coverage)
    assert {(e["path"], e["member"]) for e in entries} == {key(c) for c in result.coverage}
    member = next(e for e in entries if e["member"] == "nested/model.pkl")
    assert member["path"].endswith("evil/bundle.zip")
    assert (member["status"], member["format"], member["complete"]) == ("scanned", "pickle", True)
    gap = next(e for e in entries if e["path"].endswith("weights.npy"))
    assert (gap["status"], gap["complete"]) == ("inconclusive", False)
    assert report["summary"]["complete"] is False
    assert report["verdict"] == "unsafe"
    evil = [f for f in report["findings"] if f["location"]["member"] == "nested/model.pkl"]
    assert evil and evil[0]["severity"] == "critical"


def test_sarif_notifications_list_incomplete_coverage(tree: Path) -> None:
    result = scan(tree)
    run = to_sarif(result, threshold=HIGH)["runs"][0]
    notes = run["invocations"][0]["toolExecutionNotifications"]

    gaps = [c for c in result.coverage if not c.status.complete]
    assert gaps
    warnings = [n for n in notes if n["level"] == "warning"]
    assert len(warnings) == len(gaps)
    seen = {(n["properties"]["status"], n["properties"].get("member")) for n in warnings}
    assert seen == {(c.status.value, c.member) for c in gaps}
    assert all(n["descriptor"]["id"] == f"coverage/{n['properties']['status']}" for n in warnings)
    deep = next(n for n in warnings if n["properties"].get("member"))
    assert "[" in deep["message"]["text"] and "nesting" in deep["message"]["text"]
    assert run["invocations"][0]["properties"]["complete"] is False


def test_sarif_lists_skipped_coverage_as_notes(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(BENIGN)
    (tmp_path / "notes.log").write_text("x")
    result = scan(tmp_path, config=Config(exclude=("*.log",)))
    notes = to_sarif(result, threshold=HIGH)["runs"][0]["invocations"][0]
    skipped = [n for n in notes["toolExecutionNotifications"] if n["level"] == "note"]
    assert [n["properties"]["status"] for n in skipped] == ["skipped"]
    assert "excluded by pattern" in skipped[0]["message"]["text"]
    assert notes["properties"]["complete"] is True


def test_text_report_names_recognised_formats_and_gaps(tree: Path) -> None:
    result = scan(tree)
    text = render_text(result, threshold=HIGH)

    coverage = next(line for line in text.splitlines() if line.startswith("Coverage"))
    for fmt in ("pickle", "zip", "gzip", "tar", "text", "binary-data", "numpy", "empty"):
        assert fmt in coverage, coverage
    assert "Not fully analysed" in text
    assert "weights.npy (numpy)" in text
    assert "deep.zip[l9.zip > " in text  # members are shown with their chain
    assert text.rstrip().splitlines()[-1].startswith("UNSAFE")


@pytest.mark.parametrize("fmt", ["text", "json", "sarif"])
def test_incomplete_scan_is_never_clean_in_any_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    (tmp_path / "ok.pkl").write_bytes(BENIGN)
    (tmp_path / "deep.zip").write_bytes(deep_zip(10))

    code = main(["scan", "--no-config", "-q", "-f", fmt, str(tmp_path)])

    out = capsys.readouterr().out
    assert code == 3
    if fmt == "text":
        assert "INCOMPLETE" in out.splitlines()[-1]
    elif fmt == "json":
        assert json.loads(out)["verdict"] == "incomplete"
    else:
        assert json.loads(out)["runs"][0]["properties"]["verdict"] == "incomplete"


# ---------------------------------------------------------------------------------- directories


def test_include_and_exclude_patterns(tree: Path) -> None:
    cfg = Config(include=("*.pkl", "*.zip"), exclude=("evil/*", "deep.zip"))
    result = scan(tree, config=cfg)

    skipped = [c for c in result.coverage if c.status is CoverageStatus.SKIPPED]
    scanned = {rel(tree, c) for c in result.coverage if c.member is None and c not in skipped}
    assert "model.pkl" in scanned and "bundle.zip" in scanned
    assert all(n.endswith((".pkl", ".zip")) for n in scanned)
    assert not any(n.startswith("evil/") for n in scanned)
    excluded = {rel(tree, c) for c in skipped if c.reason == "excluded by pattern"}
    assert excluded == {"evil/model.pkl", "evil/bundle.zip", "deep.zip"}
    others = [c for c in skipped if c.reason != "excluded by pattern"]
    assert others and all(c.reason == "not matched by the include patterns" for c in others)
    assert result.is_clean()  # the malicious files were excluded, and said so


def test_files_outside_the_include_patterns_are_reported_as_skipped(tree: Path) -> None:
    result = scan(tree, config=Config(include=("*.pkl",)))
    tops = {c.path for c in result.coverage if c.member is None}
    assert str(tree / "config.json") in tops
    entry = next(c for c in result.coverage if c.path == str(tree / "config.json"))
    assert entry.status is CoverageStatus.SKIPPED and entry.reason


def test_parallel_scan_equals_serial_scan(tree: Path) -> None:
    serial = scan(tree, jobs=1)
    parallel = scan(tree, jobs=2)
    assert comparable(parallel) == comparable(serial)
    assert len({c.path for c in serial.coverage}) == 30


@pytest.mark.parametrize("jobs", [1, 2])
def test_progress_is_called_once_per_file(tree: Path, jobs: int) -> None:
    calls: list[tuple[int, int, str]] = []

    def progress(done: int, total: int, path: str) -> None:
        calls.append((done, total, path))

    result = scan(tree, jobs=jobs, progress=progress)
    assert [c[0] for c in calls] == list(range(1, 31))
    assert {c[1] for c in calls} == {30}
    assert {c[2] for c in calls} == {c.path for c in result.coverage}


def test_symlink_to_a_file_outside_the_tree_is_followed_with_a_note(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    outside = tmp_path / "elsewhere" / "payload.pkl"
    outside.parent.mkdir()
    outside.write_bytes(malicious(tmp_path / "pwned"))
    (root / "model.pkl").symlink_to(outside)
    (root / "ok.pkl").write_bytes(BENIGN)
    (root / "alias.pkl").symlink_to("ok.pkl")  # inside the tree: no note

    result = scan(root)

    entry = next(c for c in result.coverage if c.path == str(root / "model.pkl"))
    assert entry.status is CoverageStatus.SCANNED
    assert "outside the scanned tree" in (entry.reason or "")
    assert str(outside) in (entry.reason or "")
    alias = next(c for c in result.coverage if c.path == str(root / "alias.pkl"))
    assert alias.reason is None
    assert [f.location.path for f in result.at_or_above(HIGH)] == [str(root / "model.pkl")]
    report = to_dict(result, threshold=HIGH)
    assert any("outside the scanned tree" in (e["reason"] or "") for e in report["coverage"])


def test_text_report_says_when_a_symlink_left_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    outside = tmp_path / "elsewhere.pkl"
    outside.write_bytes(BENIGN)
    (root / "model.pkl").symlink_to(outside)
    text = render_text(scan(root), threshold=HIGH)
    assert "outside the scanned tree" in text


def test_symlinks_to_directories_are_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok.pkl").write_bytes(BENIGN)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.pkl").write_bytes(malicious(tmp_path / "pwned"))
    (root / "out-link").symlink_to(outside, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "broken.pkl").symlink_to(tmp_path / "missing.pkl")

    result = scan(root)

    skipped = {Path(c.path).name: c for c in result.coverage if c.status is CoverageStatus.SKIPPED}
    assert set(skipped) == {"out-link", "loop", "broken.pkl"}
    assert "not followed" in (skipped["out-link"].reason or "")
    assert str(outside) in (skipped["out-link"].reason or "")
    assert skipped["broken.pkl"].reason == "broken symlink"
    assert not any("evil.pkl" in c.path for c in result.coverage)
    assert result.is_clean()  # skipped with a reason is complete, and said so
    assert "Skipped (3)" in render_text(result, threshold=HIGH)


# ---------------------------------------------------------------------------------- CLI progress


def test_cli_progress_line_only_on_a_terminal(
    tree: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    main(["scan", "--no-config", "-j", "1", str(tree)])
    assert "[1/30]" not in capsys.readouterr().err  # not a terminal: no progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    main(["scan", "--no-config", "-j", "1", str(tree)])
    err = capsys.readouterr().err
    assert "[1/30]" in err and "[30/30]" in err
    assert err.endswith("\r\x1b[2K")  # the line is cleared before the report

    main(["scan", "--no-config", "-j", "1", "--quiet", str(tree)])
    assert "[1/30]" not in capsys.readouterr().err


def test_cli_progress_is_not_shown_for_a_single_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "model.pkl").write_bytes(BENIGN)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["scan", "--no-config", str(tmp_path / "model.pkl")]) == 0
    assert "[1/1]" not in capsys.readouterr().err


def test_every_check_module_rule_is_in_the_catalogue() -> None:
    """The catalogue reads the checks' rule tables without importing the checks: each check
    module's RULES must be one of those tables."""
    from modelshield.checks import load_checks
    from modelshield.rules.catalog import RULES

    for module in load_checks():
        assert module.RULES and all(RULES[r.id] is r for r in module.RULES), module.__name__
