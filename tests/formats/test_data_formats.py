"""Plain-data formats that no code-executing loader interprets scan clean and complete.

A normal model repository (configs, tokenizers, text, images, safetensors, raw tensors,
fastText / word2vec binaries, msgpack, CRFsuite, sentencepiece) must give a CLEAN result with
every file recognised by content — never "clean" without having looked at the bytes.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from modelshield import CoverageStatus, ScanResult, Severity, scan, scan_bytes
from modelshield.cli import main

# ---------------------------------------------------------------------------------- writers


def png_bytes() -> bytes:
    """A valid 2x1 RGB PNG, written chunk by chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 2, 1, 8, 2, 0, 0, 0)  # width, height, depth 8, RGB
    rows = b"\x00" + b"\xff\x00\x00" + b"\x00\x00\xff"  # filter byte + two pixels
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def jpeg_bytes() -> bytes:
    """The start of a JFIF file (SOI, APP0) and its end marker."""
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0 + b"\xff\xd9"


def safetensors_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    """The safetensors layout: u64 little-endian header size, JSON header, raw tensor bytes."""
    dtypes = {np.dtype("float32"): "F32", np.dtype("int64"): "I64"}
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    data = b""
    for name, array in tensors.items():
        raw = array.tobytes()
        header[name] = {
            "dtype": dtypes[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def fasttext_bytes(rng: np.random.Generator) -> bytes:
    """fastText's binary model: int32 magic 793712314, version 12, args, then matrices."""
    args = struct.pack("<12i", 100, 5, 5, 1, 0, 2, 0, 3, 6, 2000000, 0, 0) + struct.pack("<d", 1e-4)
    vectors = rng.standard_normal(64).astype(np.float32).tobytes()
    return struct.pack("<ii", 793712314, 12) + args + vectors


def word2vec_bytes(rng: np.random.Generator) -> bytes:
    """word2vec's binary format: "<count> <dim>\\n", then each word, a space, dim float32s."""
    words = (b"the", b"cat", b"sat")
    body = b"".join(w + b" " + rng.standard_normal(4).astype(np.float32).tobytes() for w in words)
    return b"3 4\n" + body


def msgpack_bytes(entries: int) -> bytes:
    """A msgpack map (what Flax writes): fixmap of ``entries`` str -> array-of-float32 bytes."""
    out = bytes([0x80 | entries])
    for i in range(entries):
        key = f"layer_{i}".encode()
        blob = np.arange(4, dtype=np.float32).tobytes()
        out += bytes([0xA0 | len(key)]) + key + b"\x92\xcc\x04\xc4" + bytes([len(blob)]) + blob
    return out


def crfsuite_bytes() -> bytes:
    """A CRFsuite model header: magic 'lCRF', size, type 'FOMC', version, counts, offsets."""
    return (
        b"lCRF" + struct.pack("<I", 256) + b"FOMC" + struct.pack("<9I", 100, *range(8)) + bytes(200)
    )


def _varint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([low])
        out += bytes([low | 0x80])


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _len_field(number: int, payload: bytes) -> bytes:
    return _field(number, 2, _varint(len(payload)) + payload)


def sentencepiece_bytes() -> bytes:
    """A sentencepiece ModelProto: repeated pieces {piece, score, type} and a TrainerSpec."""
    pieces = b"".join(
        _len_field(
            1, _len_field(1, p) + _field(2, 5, struct.pack("<f", s)) + _field(3, 0, _varint(t))
        )
        for p, s, t in ((b"<unk>", 0.0, 2), ("\u2581the".encode(), -1.5, 1), (b"a", -2.0, 1))
    )
    trainer = _len_field(
        2, _len_field(1, b"corpus.txt") + _len_field(2, b"m") + _field(4, 0, _varint(8000))
    )
    return pieces + trainer


def tokenizer_json() -> str:
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"])}
    for i, word in enumerate(["caf\u00e9", "na\u00efve", "\u4e2d\u6587", "\U0001f600"] * 40):
        vocab[f"{word}{i}"] = len(vocab)
    return json.dumps(
        {"version": "1.0", "model": {"type": "WordPiece", "vocab": vocab}}, ensure_ascii=False
    )


EXPECTED_FORMATS = {
    "config.json": "text",
    "tokenizer.json": "text",
    "tokenizer_config.json": "text",
    "special_tokens_map.json": "text",
    "generation_config.json": "text",
    "vocab.txt": "text",
    "merges.txt": "text",
    "README.md": "text",
    ".gitattributes": "text",
    "logo.png": "png",
    "sample.jpg": "jpeg",
    "model.safetensors": "safetensors",
    "weights.bin": "binary-data",
    "fasttext.bin": "fasttext",
    "word2vec.bin": "binary-data",
    "flax_model.msgpack": "binary-data",
    "crf.model": "crfsuite",
    "spiece.model": "binary-data",
    "empty.txt": "empty",
}


def write_repository(root: Path) -> Path:
    """A Hugging Face-style model directory of plain-data files."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes | str] = {
        "config.json": json.dumps(
            {"architectures": ["BertModel"], "hidden_size": 8, "model_type": "bert"}, indent=2
        ),
        "tokenizer.json": tokenizer_json(),
        "tokenizer_config.json": json.dumps({"do_lower_case": True, "model_max_length": 512}),
        "special_tokens_map.json": json.dumps({"pad_token": "[PAD]", "unk_token": "[UNK]"}),
        "generation_config.json": json.dumps({"max_length": 20, "do_sample": False}),
        "vocab.txt": "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\ncat\n",
        "merges.txt": "#version: 0.2\n\u0120 t\nh e\n\u0120t he\n",
        "README.md": "---\nlicense: mit\n---\n# Tiny BERT\n\nA card with emoji \U0001f916.\n",
        ".gitattributes": "*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        "logo.png": png_bytes(),
        "sample.jpg": jpeg_bytes(),
        "model.safetensors": safetensors_bytes(
            {
                "embeddings.weight": rng.standard_normal((4, 8)).astype(np.float32),
                "position_ids": np.arange(8, dtype=np.int64),
            }
        ),
        "weights.bin": rng.standard_normal(4096).astype(np.float32).tobytes(),
        "fasttext.bin": fasttext_bytes(rng),
        "word2vec.bin": word2vec_bytes(rng),
        "flax_model.msgpack": msgpack_bytes(1),  # {"params": ...}: one top-level entry
        "crf.model": crfsuite_bytes(),
        "spiece.model": sentencepiece_bytes(),
        "empty.txt": b"",
    }
    for name, content in files.items():
        path = root / name
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
    assert set(files) == set(EXPECTED_FORMATS)
    return root


def formats(result: ScanResult) -> dict[str, str]:
    return {Path(c.path).name: c.format for c in result.coverage if c.member is None}


# ---------------------------------------------------------------------------------- the repository


def test_model_repository_is_clean_and_complete_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = write_repository(tmp_path / "tiny-bert")

    code = main(["scan", "--no-config", "--quiet", str(repo)])

    out = capsys.readouterr().out
    assert code == 0, out
    assert "CLEAN" in out.splitlines()[-1]
    assert "No findings." in out
    coverage_line = next(line for line in out.splitlines() if line.startswith("Coverage"))
    for fmt in ("text", "png", "jpeg", "safetensors", "fasttext", "crfsuite", "binary-data"):
        assert fmt in coverage_line


def test_model_repository_formats_are_recognised_by_content(tmp_path: Path) -> None:
    repo = write_repository(tmp_path / "tiny-bert")

    result = scan(repo)

    assert not result.findings, [(f.rule_id, f.location.path, f.message) for f in result.findings]
    assert result.complete
    assert all(c.status is CoverageStatus.SCANNED for c in result.coverage)
    assert formats(result) == EXPECTED_FORMATS
    # Every file was looked at: sizes are recorded, and the unknown binaries say why they are
    # data (a pickle loader rejects them before importing anything).
    for c in result.coverage:
        assert c.size == (repo / Path(c.path).name).stat().st_size
        if c.format == "binary-data":
            assert "rejects it at byte" in (c.reason or "")


def test_renamed_data_files_are_still_recognised_by_content(tmp_path: Path) -> None:
    (tmp_path / "a.dat").write_bytes(png_bytes())
    (tmp_path / "b.dat").write_bytes(safetensors_bytes({"w": np.zeros(3, dtype=np.float32)}))
    (tmp_path / "c.dat").write_bytes(crfsuite_bytes())
    result = scan(tmp_path)
    assert formats(result) == {"a.dat": "png", "b.dat": "safetensors", "c.dat": "crfsuite"}
    assert result.is_clean(Severity.INFO)


# ---------------------------------------------------------------------------------- raw tensors


def test_random_float32_tensors_are_complete_and_never_flagged_high() -> None:
    # Observed: for seeds 0-199 every buffer is "binary-data" (a pickle loader rejects it at
    # byte 0) or a pickle-looking buffer with medium findings only; none is incomplete.
    for seed in range(200):
        data = np.random.default_rng(seed).standard_normal(1024).astype(np.float32).tobytes()
        result = scan_bytes(data, "pytorch_model.bin")
        assert result.complete, (seed, result.coverage)
        assert not result.at_or_above(Severity.HIGH), (seed, result.findings)


def _tensor_starting_with(prefix: bytes) -> bytes:
    rest = np.random.default_rng(7).standard_normal(1023).astype(np.float32).tobytes()
    head = prefix + b"\xaa\xbd"[: 4 - len(prefix)]
    value = np.frombuffer(head, "<f4")[0]
    assert np.isfinite(value)  # a genuine float32 value (about -0.083 for b"8\x8d")
    return head + rest


def test_raw_tensor_that_looks_like_a_zlib_header_is_data() -> None:
    data = _tensor_starting_with(b"8\x8d")  # 0x388d % 31 == 0: a valid zlib header
    result = scan_bytes(data, "weights.bin")
    assert result.complete, result.coverage
    assert [c.format for c in result.coverage] == ["binary-data"]
    assert not result.findings


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("weights.bin", _tensor_starting_with(b"\x83\x7f")),
        ("flax_model.msgpack", msgpack_bytes(2)),
        ("flax_model.msgpack", msgpack_bytes(4)),
    ],
    ids=["tensor-ext2", "msgpack-2-entries", "msgpack-4-entries"],
)
def test_data_starting_with_an_ext_opcode_is_data(name: str, data: bytes) -> None:
    import pickle

    with pytest.raises(ValueError, match="unregistered extension code"):
        pickle.loads(data)
    result = scan_bytes(data, name)
    assert [c.format for c in result.coverage] == ["binary-data"]
    assert not result.findings


@pytest.mark.parametrize("entries", [1, 5, 15])
def test_msgpack_maps_are_data(entries: int) -> None:
    result = scan_bytes(msgpack_bytes(entries), "flax_model.msgpack")
    assert [c.format for c in result.coverage] == ["binary-data"]
    assert not result.findings


def test_raw_bytes_starting_with_the_pickle_protocol_marker_stay_complete() -> None:
    # Observed: b"\x80\x02" is the pickle magic, so such bytes are taken as a malformed pickle
    # (format "pickle", MS100 medium): reported, but complete and below the default threshold.
    data = b"\x80\x02" + np.random.default_rng(1).bytes(4094)
    result = scan_bytes(data, "weights.bin")
    assert result.complete
    assert result.is_clean()
    assert {f.rule_id for f in result.findings} <= {"MS100"}


@pytest.mark.parametrize(
    "header", [b"3 4\n", b"10 300\n", b"2 4\n", b"1 1\n"], ids=["3", "10", "2", "1"]
)
def test_word2vec_headers_are_data(header: bytes) -> None:
    rng = np.random.default_rng(3)
    data = header + b"word " + rng.standard_normal(4).astype(np.float32).tobytes() + b"\n"
    result = scan_bytes(data, "vectors.bin")
    assert result.is_clean(Severity.INFO), result.findings
    assert result.complete
