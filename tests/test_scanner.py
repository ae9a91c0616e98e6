"""The scanner: content sniffing, coverage, directories, symlinks, configuration, jobs."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

import modelshield
from modelshield import Config, CoverageStatus, InputError, Severity, scan, scan_bytes
from modelshield.analysis import FileOutcome
from modelshield.config import Baseline
from modelshield.demo import MALICIOUS
from modelshield.pickle import Limits
from modelshield.scanner import FileTask


def cov(result: modelshield.ScanResult, name: str) -> modelshield.Coverage:
    return next(c for c in result.coverage if c.path.endswith(name))


def test_format_is_sniffed_by_content_not_extension(tmp_path: Path) -> None:
    for name in ("weights.safetensors", "README.md", "noext", "model.onnx"):
        (tmp_path / name).write_bytes(MALICIOUS)
    result = scan(tmp_path)
    assert len({f.location.path for f in result.at_or_above(Severity.CRITICAL)}) == 4
    assert all(c.format == "pickle" for c in result.coverage)


def test_text_and_binary_data_are_recognised_as_data(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"architectures": ["Bert"], "vocab_size": 30522}')
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\ncat\n")
    (tmp_path / "weights.raw").write_bytes(bytes([0xFF, 0x00, 0x12]) * 1000)
    result = scan(tmp_path)
    assert result.is_clean()
    assert not result.findings
    assert cov(result, "config.json").format == "text"
    assert cov(result, "weights.raw").format == "binary-data"
    assert "rejects it at byte 0" in (cov(result, "weights.raw").reason or "")


def test_text_that_starts_like_a_global_opcode_stays_text(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("config\nsettings for the model\nmore text\n")
    result = scan(tmp_path / "notes.txt")
    assert cov(result, "notes.txt").format == "text"
    assert result.is_clean()


def test_protocol0_pickle_is_found_without_proto_opcode() -> None:
    data = pickle.dumps({"a": 1}, protocol=0)
    result = scan_bytes(data)
    assert result.coverage[0].format == "pickle"
    assert result.is_clean()


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.pkl").write_bytes(b"")
    result = scan(tmp_path / "empty.pkl")
    assert result.is_clean()
    assert result.coverage[0].format == "empty"


def test_unsupported_container_is_inconclusive(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04" + bytes(100))
    result = scan(tmp_path)
    assert not result.complete
    assert cov(result, "model.pt").status is CoverageStatus.INCONCLUSIVE
    assert not result.is_clean()


def test_missing_input_raises() -> None:
    with pytest.raises(InputError):
        scan("/nonexistent/model.pkl")


def test_directory_walk_is_sorted_and_relative(tmp_path: Path) -> None:
    sub = tmp_path / "b" / "c"
    sub.mkdir(parents=True)
    (sub / "x.pkl").write_bytes(pickle.dumps([1]))
    (tmp_path / "a.pkl").write_bytes(pickle.dumps([2]))
    result = scan(str(tmp_path))
    assert [c.path for c in result.coverage] == [f"{tmp_path}/a.pkl", f"{tmp_path}/b/c/x.pkl"]


def test_symlink_out_of_tree_is_followed_and_said(tmp_path: Path) -> None:
    outside = tmp_path / "blobs"
    outside.mkdir()
    (outside / "abc123").write_bytes(MALICIOUS)
    tree = tmp_path / "snapshot"
    tree.mkdir()
    os.symlink(outside / "abc123", tree / "pytorch_model.bin")
    os.symlink(outside, tree / "linked_dir")
    os.symlink(tmp_path / "missing", tree / "broken.bin")
    result = scan(tree)
    c = cov(result, "pytorch_model.bin")
    assert "outside the scanned tree" in (c.reason or "")
    assert result.at_or_above(Severity.CRITICAL)
    d = cov(result, "linked_dir")
    assert d.status is CoverageStatus.SKIPPED and "not followed" in (d.reason or "")
    assert cov(result, "broken.bin").reason == "broken symlink"


def test_unreadable_file_is_an_error_not_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelshield import analysis

    f = tmp_path / "locked.pkl"
    f.write_bytes(pickle.dumps(1))

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(analysis, "open", denied, raising=False)
    result = scan(tmp_path)
    assert result.errors and "Permission denied" in result.errors[0].message
    assert result.coverage[0].status is CoverageStatus.INCONCLUSIVE
    assert not result.complete


def test_ignore_and_baseline_suppress_but_keep_record(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(MALICIOUS)
    result = scan(bad, config=Config(ignore=frozenset({"MS101"})))
    assert not result.findings and result.suppressed
    digest = hashlib.sha256(MALICIOUS).hexdigest()
    base = Config(baselines=(Baseline(digest, "reviewed", frozenset({"MS101"})),))
    result = scan(bad, config=base)
    assert not result.findings and len(result.suppressed) == 1
    assert result.coverage[0].sha256 == digest
    other = Config(baselines=(Baseline("0" * 64, "other file"),))
    assert scan(bad, config=other).findings


def test_parallel_jobs_give_the_same_result(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"f{i:02}.pkl").write_bytes(MALICIOUS if i % 5 == 0 else pickle.dumps(i))
    serial = scan(tmp_path, jobs=1)
    parallel = scan(tmp_path, jobs=2)
    assert serial.findings == parallel.findings
    assert serial.coverage == parallel.coverage


def test_parallel_batches_big_and_small_files(tmp_path: Path) -> None:
    big = pickle.dumps(list(range(100_000)))  # over the small-file size: a unit of its own
    for i in range(40):
        data = MALICIOUS if i % 7 == 0 else big if i % 10 == 1 else pickle.dumps(i)
        (tmp_path / f"f{i:02}.pkl").write_bytes(data)
    seen: list[tuple[int, str]] = []
    parallel = scan(tmp_path, jobs=2, progress=lambda done, total, path: seen.append((done, path)))
    serial = scan(tmp_path, jobs=1)
    assert serial.findings == parallel.findings and serial.coverage == parallel.coverage
    assert [d for d, _ in seen] == list(range(1, 41))
    assert sorted(Path(p).name for _, p in seen) == sorted(f"f{i:02}.pkl" for i in range(40))


def test_batches_cover_every_file_once_largest_first() -> None:
    from modelshield.scanner import _BATCH_FILES, _SMALL_FILE, FileTask, _batches

    tasks = [FileTask(f"p{i}", f"p{i}", size=(i % 5) * _SMALL_FILE // 2) for i in range(50)]
    tasks += [FileTask(f"m{i}.H5", f"m{i}.H5", size=_SMALL_FILE * 4) for i in range(3)]
    batches = _batches(tasks)
    assert sorted(t.path for b in batches for t in b) == sorted(t.path for t in tasks)
    assert all(len(b) == 1 for b in batches if b[0].size >= _SMALL_FILE and b[0].path[0] == "p")
    assert all(len(b) <= _BATCH_FILES for b in batches)
    assert [len(b) for b in batches if b[0].path.startswith("m")] == [3]  # one h5py import
    totals = [sum(t.size for t in b) for b in batches]
    assert totals == sorted(totals, reverse=True)


def test_big_files_of_one_family_stay_parallel() -> None:
    from modelshield.scanner import FileTask, _batches

    big = [FileTask(f"m{i}.gguf", f"m{i}.gguf", size=4 << 30) for i in range(32)]
    assert [len(b) for b in _batches(big)] == [1] * 32
    small = [FileTask(f"v{i}.gguf", f"v{i}.gguf", size=5 << 20) for i in range(32)]
    assert all(sum(t.size for t in b) <= 64 << 20 for b in _batches(small))
    assert max(len(b) for b in _batches(small)) > 1


def test_progress_callback(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"{i}.pkl").write_bytes(pickle.dumps(i))
    seen: list[tuple[int, int]] = []
    scan(tmp_path, progress=lambda done, total, path: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_limit_makes_coverage_partial() -> None:
    data = pickle.dumps(list(range(5000)), protocol=0)
    result = scan_bytes(data)
    assert result.complete
    from modelshield.scanner import Analyzer, FileTask

    out = Analyzer(Config(), Limits(max_opcodes=100)).scan_file(FileTask("x", "x"), data)
    assert out.coverage[0].status is CoverageStatus.PARTIAL
    assert any(f.rule_id == "MS111" for f in out.findings)


def test_analyser_crash_becomes_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelshield import analysis

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(analysis, "pickle_findings", boom)
    result = scan_bytes(MALICIOUS)
    assert result.findings[0].rule_id == "MS112"
    assert result.coverage[0].status is CoverageStatus.INCONCLUSIVE
    assert not result.is_clean()


def test_bytes_read_stays_small_for_big_trailing_data(tmp_path: Path) -> None:
    big = tmp_path / "big.pkl"
    with big.open("wb") as fh:
        fh.write(pickle.dumps({"a": 1}, protocol=4))
        fh.truncate(50 << 20)
    result = scan(big)
    assert result.bytes_read < 1 << 20


def _no_children_left() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.mark.parametrize("fork", [True, False])
def test_both_ways_of_starting_workers_give_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork: bool
) -> None:
    import modelshield.scanner as scanner

    _tree(tmp_path, 30)
    serial = scan(tmp_path, jobs=1)
    monkeypatch.setattr(scanner, "_FORK", fork)
    parallel = scan(tmp_path, jobs=3)
    assert serial.findings == parallel.findings and serial.coverage == parallel.coverage
    assert serial.bytes_read == parallel.bytes_read
    assert _no_children_left()


def test_a_worker_that_dies_costs_only_the_file_it_was_scanning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash in a worker (here: killed while scanning one file) is reported for that file;
    the other files of its batch are scanned again by a new worker, and nothing is called clean."""
    import signal

    from modelshield.scanner import Analyzer

    for i in range(40):
        (tmp_path / f"f{i:02}.pkl").write_bytes(MALICIOUS if i == 3 else pickle.dumps(i))
    real = Analyzer.scan_file

    def dies_on_f07(self: Analyzer, task: FileTask, data: bytes | None = None) -> FileOutcome:
        if task.path.endswith("f07.pkl"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, task, data)

    monkeypatch.setattr(Analyzer, "scan_file", dies_on_f07)
    result = scan(tmp_path, jobs=2)
    assert len(result.coverage) == 40
    lost = [c for c in result.coverage if c.status is CoverageStatus.INCONCLUSIVE]
    assert [c.path for c in lost] == [str(tmp_path / "f07.pkl")]
    assert "killed by signal 9" in (lost[0].reason or "")
    assert [e.path for e in result.errors] == [str(tmp_path / "f07.pkl")]
    assert not result.complete and not result.is_clean()
    assert {f.location.path for f in result.findings} == {str(tmp_path / "f03.pkl")}
    assert _no_children_left()


def test_worker_outcomes_survive_the_trip_to_the_parent() -> None:
    """Every field of every record, as the forked workers send them (JSON, no pickle)."""
    from modelshield.findings import Confidence, Coverage, Finding, Location, ScanError
    from modelshield.scanner import _pack, _unpack

    loc = Location("m.pt", "archive/data.pkl", 12, 3, "REDUCE")
    finding = Finding(
        "MS101", Severity.CRITICAL, Confidence.HIGH, "m \udc80é", loc, "os.system('id')", 94, "why"
    )
    out = FileOutcome(
        findings=[finding],
        coverage=[
            Coverage("m.pt", CoverageStatus.PARTIAL, "pytorch", "a/b", "limit", 5, "ab" * 32)
        ],
        errors=[ScanError("m.pt", "cannot read")],
        suppressed=[Finding("MS105", Severity.MEDIUM, Confidence.LOW, "m", Location("x"))],
        bytes_read=7,
        decompressed=9,
    )
    back = _unpack(_pack([out, FileOutcome()]))
    assert back == [out, FileOutcome()]
    assert type(back[0].findings[0].severity) is Severity


def _tree(root: Path, n: int, big: int = 0) -> Path:
    root.mkdir(exist_ok=True)
    for i in range(n):
        data = MALICIOUS if i % 7 == 0 else pickle.dumps(i)
        if i < big:  # over the small-file size: a batch of its own
            data = pickle.dumps(list(range(100_000 + i)))
        (root / f"f{i:02}.pkl").write_bytes(data)
    return root


def test_scans_in_threads_do_not_share_workers(tmp_path: Path) -> None:
    """Workers forked by one scan must not hold another scan's pipes open (each would then wait
    for the other's end of file, for ever)."""
    import threading

    trees = [_tree(tmp_path / f"t{k}", 24, big=3) for k in range(3)]
    expected = [scan(t, jobs=1).coverage for t in trees]
    for _ in range(3):
        got: dict[int, object] = {}

        def one(k: int, got: dict[int, object] = got) -> None:
            got[k] = scan(trees[k], jobs=2).coverage

        threads = [threading.Thread(target=one, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "parallel scans in threads hung"
        assert [got[k] for k in range(3)] == expected
    assert _no_children_left()


def test_every_worker_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four big files and --jobs 4: four workers, one file each (not two workers taking two)."""
    import modelshield.scanner as scanner

    _tree(tmp_path, 4, big=4)
    forks: list[int] = []
    real = scanner._fork_child

    def counting(*args: Any) -> Any:
        child = real(*args)
        forks.append(child.pid)
        return child

    monkeypatch.setattr(scanner, "_fork_child", counting)
    result = scan(tmp_path, jobs=4)
    assert len(forks) == 4 and len(result.coverage) == 4 and result.complete


def test_many_open_descriptors(tmp_path: Path) -> None:
    """Worker pipes numbered over 1023 (select() cannot watch them; poll() can)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"open-file limit {soft}")
    _tree(tmp_path, 20)
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        assert scan(tmp_path, jobs=2).coverage == scan(tmp_path, jobs=1).coverage
    finally:
        for fd in held:
            os.close(fd)


def test_workers_when_sigchld_is_ignored(tmp_path: Path) -> None:
    """A parent that ignores SIGCHLD (inherited across exec): children are reaped by the system."""
    import signal

    _tree(tmp_path, 20)
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        result = scan(tmp_path, jobs=2)
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert result.complete and result.coverage == scan(tmp_path, jobs=1).coverage


def test_failed_fork_leaks_no_descriptor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path, 20)
    before = len(os.listdir("/proc/self/fd"))

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    with pytest.raises(BlockingIOError):
        scan(tmp_path, jobs=2)
    assert len(os.listdir("/proc/self/fd")) == before


def test_an_exception_in_the_progress_callback_stops_the_workers(tmp_path: Path) -> None:
    _tree(tmp_path, 40, big=6)

    def fails(done: int, total: int, path: str) -> None:
        raise RuntimeError("progress display broke")

    with pytest.raises(RuntimeError) as caught:
        scan(tmp_path, jobs=2, progress=fails)
    assert caught.value is not None  # (the traceback, still held, keeps the scan's frames)
    assert _no_children_left()
