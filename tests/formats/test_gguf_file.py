"""The GGUF metadata parser's string-array walk: the fast path (a regular expression stepping
over runs of short strings) must end exactly where the checked one-string-at-a-time walk ends,
and report the same errors at the same offsets, whatever the array holds."""

from __future__ import annotations

import random
import re
import struct
from dataclasses import dataclass

import pytest

from modelshield.formats import gguf_file as gg

KEY = "tokenizer.ggml.tokens"


def _string(raw: bytes, width: int = 8) -> bytes:
    return struct.pack("<Q" if width == 8 else "<I", len(raw)) + raw


def _gguf(tokens: list[bytes], *, version: int = 3, count: int | None = None) -> bytes:
    """A header with a string array of ``tokens`` followed by a chat template."""
    width = 8 if version >= 2 else 4
    wide = "<Q" if width == 8 else "<I"
    out = b"GGUF" + struct.pack("<I", version) + struct.pack(wide, 0) + struct.pack(wide, 2)
    out += _string(KEY.encode(), width) + struct.pack("<I", gg.ValueType.ARRAY)
    out += struct.pack("<I", gg.ValueType.STRING) + struct.pack(wide, count or len(tokens))
    out += b"".join(_string(t, width) for t in tokens)
    out += _string(b"tokenizer.chat_template", width) + struct.pack("<I", gg.ValueType.STRING)
    return out + _string(b"{{ messages }}", width)


@dataclass(frozen=True)
class Outcome:
    keys: tuple[tuple[str, int], ...]
    """Each key read, with its offset."""
    header_end: int
    error: tuple[str, int] | None
    """The message and offset where parsing stopped."""


def _both(data: bytes) -> tuple[Outcome, Outcome]:
    """What the fast walk and the checked walk read."""
    outs = []
    for keep in (frozenset(), frozenset({KEY})):  # kept arrays always take the checked walk
        f, r = gg.parse(data, keep_string_arrays=keep)
        r.close()
        err = (str(f.error), f.error.offset) if f.error else None
        outs.append(Outcome(tuple((kv.key, kv.offset) for kv in f.kv), f.header_end, err))
    return outs[0], outs[1]


def _vocab(n: int, seed: int, long_every: int = 0) -> list[bytes]:
    rng = random.Random(seed)  # noqa: S311 (reproducible samples)
    out = []
    for i in range(n):
        long = long_every and i % long_every == 7
        size = 300 + rng.randrange(2000) if long else rng.randrange(40)
        out.append(bytes(rng.randrange(256) for _ in range(size)))
    return out


@pytest.mark.parametrize("version", [1, 3])
@pytest.mark.parametrize("long_every", [0, 997, 5000])
def test_fast_walk_matches_checked_walk(version: int, long_every: int) -> None:
    data = _gguf(_vocab(5000, 1, long_every), version=version)
    fast, checked = _both(data)
    assert fast == checked
    assert fast.error is None and [k for k, _ in fast.keys] == [KEY, "tokenizer.chat_template"]


def test_empty_and_255_byte_strings_on_the_fast_path() -> None:
    tokens = [b"", b"x" * 255, b"\0" * 8] * 1500
    fast, checked = _both(_gguf(tokens))
    assert fast == checked and fast.error is None


@pytest.mark.parametrize("cut", [17, 5000, 20_001, 40_000, -30])
def test_truncation_reported_identically(cut: int) -> None:
    data = _gguf(_vocab(3000, 2, 1200))
    fast, checked = _both(data[:cut])
    assert fast == checked
    assert fast.error is not None and "truncated" in fast.error[0]


def test_array_claiming_more_strings_than_present() -> None:
    tokens = _vocab(2100, 3)
    data = _gguf(tokens, count=2100 + 2048)  # the next key's bytes read as strings
    fast, checked = _both(data)
    assert fast == checked and fast.error is not None


def test_length_over_the_limit_in_a_run() -> None:
    tokens = _vocab(3000, 4)
    data = bytearray(_gguf(tokens))
    at = data.index(_string(tokens[1500]))
    data[at : at + 8] = struct.pack("<Q", (1 << 30) + 1)
    fast, checked = _both(bytes(data))
    assert fast == checked
    assert fast.error is not None and "over the limit" in fast.error[0]


def test_fast_path_is_taken_for_plain_vocabularies(monkeypatch: pytest.MonkeyPatch) -> None:
    widths: list[int] = []
    real = gg._short_strings

    def spy(width: int) -> re.Pattern[bytes]:
        widths.append(width)
        return real(width)

    monkeypatch.setattr(gg, "_short_strings", spy)
    f, r = gg.parse(_gguf(_vocab(3000, 5)))
    r.close()
    assert f.error is None and widths == [8]
