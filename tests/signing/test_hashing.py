"""Model serialization rules (no cryptography needed)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from modelshield.signing import SigningError
from modelshield.signing.hashing import (
    DEFAULT_IGNORED,
    Serialization,
    hash_model,
    normalize_ignore,
)


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "a.txt").write_bytes(b"hello\n")
    (root / "a.b").write_bytes(b"q\n")
    (root / "sub" / "b.bin").write_bytes(b"x\n")
    (root / ".git" / "HEAD").write_bytes(b"ref\n")
    (root / "empty").write_bytes(b"")
    return root


def test_files_manifest_order_names_and_root_digest(tmp_path: Path) -> None:
    root = _tree(tmp_path / "m")
    m = hash_model(root, jobs=3)
    # sorted by path components: "a.b" < "a.txt" < "empty" < "sub/b.bin"; .git ignored
    assert [r.name for r in m.resources] == ["a.b", "a.txt", "empty", "sub/b.bin"]
    assert m.resources[1].digest == hashlib.sha256(b"hello\n").hexdigest()
    assert m.model_name == "m"
    expected = hashlib.sha256(b"".join(bytes.fromhex(r.digest) for r in m.resources)).hexdigest()
    assert m.root_digest() == expected


def test_component_order_differs_from_string_order(tmp_path: Path) -> None:
    root = tmp_path / "m"
    (root / "a").mkdir(parents=True)
    (root / "a" / "z").write_bytes(b"1")
    (root / "a.txt").write_bytes(b"2")
    names = [r.name for r in hash_model(root).resources]
    assert names == ["a/z", "a.txt"]  # ("a","z") < ("a.txt",) although "a/z" > "a.txt"


def test_single_file_is_named_dot(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)
    m = hash_model(f)
    assert [(r.name, r.digest) for r in m.resources] == [
        (".", hashlib.sha256(b"abc" * 1000).hexdigest())
    ]
    assert m.model_name == "w.bin"


def test_shards(tmp_path: Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    data = os.urandom(2500)
    (root / "big").write_bytes(data)
    (root / "zero").write_bytes(b"")
    ser = Serialization("shards", "sha256", False, DEFAULT_IGNORED, 1000)
    m = hash_model(root, ser)
    assert [r.name for r in m.resources] == ["big:0:1000", "big:1000:2000", "big:2000:2500"]
    assert {r.algorithm for r in m.resources} == {"sha256-sharded-1000"}
    assert m.resources[2].digest == hashlib.sha256(data[2000:]).hexdigest()
    assert m.resources[0].path == "big"


def test_ignore_paths(tmp_path: Path) -> None:
    root = _tree(tmp_path / "m")
    ser = Serialization(ignore_paths=(*DEFAULT_IGNORED, "sub"))
    assert [r.name for r in hash_model(root, ser).resources] == ["a.b", "a.txt", "empty"]
    assert normalize_ignore(["./sub/", "/abs", "../up", "x//y"]) == ("sub", "x/y")


def test_large_file_streams_across_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 123)
    (tmp_path / "f").write_bytes(data)
    for hash_type, fn in (("sha256", hashlib.sha256), ("blake2b", hashlib.blake2b)):
        m = hash_model(tmp_path / "f", Serialization(hash_type=hash_type))
        assert m.resources[0].digest == fn(data).hexdigest()


def test_symlinks_refused_unless_allowed(tmp_path: Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    (tmp_path / "target").write_bytes(b"t")
    (root / "link").symlink_to(tmp_path / "target")
    with pytest.raises(SigningError, match="symbolic link"):
        hash_model(root)
    m = hash_model(root, Serialization(allow_symlinks=True))
    assert m.resources[0].digest == hashlib.sha256(b"t").hexdigest()
    (root / "dirlink").symlink_to(tmp_path)
    with pytest.raises(SigningError, match="directories"):
        hash_model(root, Serialization(allow_symlinks=True))


def test_special_file_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    os.mkfifo(root / "fifo")
    with pytest.raises(SigningError, match="not a regular file"):
        hash_model(root)


def test_serialization_json_roundtrip() -> None:
    ser = Serialization("shards", "sha256", True, (".git", "x"), 10)
    assert Serialization.from_json(ser.to_json()) == ser
    with pytest.raises(ValueError):
        Serialization.from_json({"method": "nope", "hash_type": "sha256", "allow_symlinks": False})
    with pytest.raises(ValueError):
        Serialization.from_json({"method": "files", "hash_type": "md5", "allow_symlinks": False})
